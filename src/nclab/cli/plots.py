"""Figures of nclab results (the presentation layer: the only place besides the CLI that uses
matplotlib).

* :func:`plot_result` -- a UFM solve (:func:`nclab.ufm.run.solve`): objective gap and nc1 (or the
  sphere's frame-potential excess) against iterations, log axes.
* :func:`plot_starts` / :func:`plot_catalogue` -- the landscape survey
  (:func:`nclab.ufm.landscape.survey.run_survey`): the fraction of random starts that reach the
  certified global minimum and their iterations, per solver; the critical points' objective gap
  against the smallest (orbit-deflated) Hessian eigenvalue, coloured by kind, and the Hessian
  spectrum of a strict saddle beside a global minimiser's.
* :func:`plot_runs` -- Papyan-style figures of neural collapse during training, several runs
  overlaid: one panel per quantity against the epoch (Papyan, Han & Donoho 2020, figures 2-7):
  train/test accuracy, training loss, nc1 = Tr(Sigma_W Sigma_B^+)/K (log axis), equinorm of the
  centred class means (solid) and of the classifier rows (dashed), the max-angle measure of both,
  nc3 (self-duality), nc4 (classifier vs nearest class mean) and CDNV.  Each run directory written
  by ``nclab train`` is one colour; the legend names it by its head and numeric feature dimension
  (or by ``labels``, with d appended).  A fixed ETF classifier has equinorm/max-angle of W equal
  to 0 (up to rounding): values below :data:`ROUNDING_FLOOR` are not drawn on the log axes (the
  panel's legend says "0 (fixed)"), so the axes follow the measured curves.  Epoch ticks are
  integers.

Every ``plot_*`` writes a file; the ``*_figure`` beside it returns the
:class:`matplotlib.figure.Figure` (tests read its axes, labels and lines).  Every panel has
labelled x and y axes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nclab.cli.runlog import read_run_config
from nclab.cli.runlog import read_run_log as read_log  # tolerant: a bad line is skipped with a warning
from nclab.nets.rundir import SUMMARY
from nclab.ufm.run import gap_history

__all__ = ["plot_result", "plot_runs", "runs_figure", "plot_starts", "starts_figure", "plot_catalogue",
           "catalogue_figure", "run_label", "feature_dim", "PANELS", "ROUNDING_FLOOR"]


def _metric_history(result: dict, name: str) -> tuple[list[int], list[float]]:
    its, vals = [], []
    for r in result["log"]["iterations"]:
        m = r.get("metrics")
        if not m:
            continue
        v = m.get(name)
        if v is not None and math.isfinite(v):
            its.append(int(r["iter"]))
            vals.append(v)
    return its, vals


def _positive(vals, floor=1e-17):
    return [max(v, floor) if math.isfinite(v) else math.nan for v in vals]


def plot_result(result: dict, path=None, *, axes=None, title: str | None = None):
    """Figure of a result: objective gap against iterations and, on the second axis, nc1 (NC
    problems) or the frame potential's relative excess FP/(n^2/d) - 1 (sphere), both on log axes
    (iteration 0 is drawn at 1).  Writes a PNG to ``path`` if given; returns the figure."""
    import matplotlib

    if path is not None and axes is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    else:
        fig = axes[0].figure
    its, gaps, glabel = gap_history(result)
    x = [max(i, 1) for i in its]
    axes[0].loglog(x, _positive(gaps), "-", lw=1.4, label=result["solver"])
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel(glabel)
    axes[0].set_title("objective gap")
    axes[0].grid(True, which="major", alpha=0.3)
    sphere = result["loss"] == "sphere"
    name = "frame_potential_excess" if sphere else "nc1"
    mi, mv = _metric_history(result, name)
    axes[1].loglog([max(i, 1) for i in mi], _positive(mv), "o-", ms=3, label=result["solver"])
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel(r"FP$/(n^2/d) - 1$" if sphere else "nc1")
    axes[1].set_title("frame potential excess" if sphere else "NC1 (within-class variability)")
    axes[1].grid(True, which="major", alpha=0.3)
    if title is None:
        p = result["problem"]
        title = ", ".join(f"{k}={v}" for k, v in p.items() if v is not None) + f" | {result['solver']}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


#: (title, y label, [(log key, line style)], y scale) of each panel, in order.
PANELS = (
    ("accuracy (solid train, dashed test)", "accuracy", [("train_acc", "-"), ("test_acc", "--")], "linear"),
    ("training loss", "loss (training set, eval mode)", [("train_loss", "-")], "log"),
    ("NC1: Tr(Σ_W Σ_B⁺)/K", "nc1", [("nc1", "-")], "log"),
    ("NC2 equinorm (solid means, dashed W)", "std/mean of the norms",
     [("nc2_equinorm_means", "-"), ("nc2_equinorm_W", "--")], "log"),
    ("NC2 max-angle (solid means, dashed W)", "mean |cos + 1/(K−1)|",
     [("nc2_maxangle_means", "-"), ("nc2_maxangle_W", "--")], "log"),
    ("NC3: |W/|W| − M/|M||²", "nc3", [("nc3", "-")], "log"),
    ("NC4: classifier ≠ nearest mean", "fraction of training samples", [("nc4", "-")], "symlog"),
    ("CDNV", "cdnv", [("cdnv", "-")], "log"),
)

#: Values of the dimensionless NC2 measures at or below this are zero up to rounding (a fixed ETF
#: classifier's W: about 1e-16 in float64, 1e-8 never); a log axis does not draw them.
ROUNDING_FLOOR = 1e-12


def _default_feature_dim(model: str | None) -> int | None:
    """The backbone's own feature dimension when ``feature_dim`` is None, asked of the model code
    (the ResNet is built on the meta device: no memory, no weights; the MLP's is its hidden width)."""
    import inspect

    from nclab.nets import backbones

    if model == "resnet18":
        import torch

        with torch.device("meta"):
            return int(backbones.resnet18_cifar().feature_dim)
    if model == "mlp":
        return int(inspect.signature(backbones.build_network).parameters["hidden"].default)
    return None


def _quiet(message: str) -> None:
    """Swallow a reader's message (the command warned once already)."""


def feature_dim(run_dir: str | Path) -> int | None:
    """The feature dimension d of a run: summary.json's (the built network's), else config.json's
    ``feature_dim``, else the backbone's default for the config's model (512); None if unknown."""
    run_dir = Path(run_dir)
    try:
        d = json.loads((run_dir / SUMMARY).read_text()).get("feature_dim")
        if isinstance(d, int):
            return d
    except (OSError, ValueError, AttributeError):
        pass
    cfg = read_run_config(run_dir, on_error=_quiet)  # plot_command has warned about a bad config
    if cfg is None:
        return None
    d = cfg.get("feature_dim")
    return int(d) if d is not None else _default_feature_dim(cfg.get("model", "resnet18"))


def run_label(run_dir: str | Path) -> str:
    """``"<head> d=<d> (<dir>)"`` from the run's config.json, d resolved by :func:`feature_dim`
    (512 for the default backbone width; the directory name alone if there is no config)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, on_error=_quiet)
    if cfg is None:
        return run_dir.name
    d = feature_dim(run_dir)
    return f"{cfg.get('head', '?')} d={'?' if d is None else d} ({run_dir.name})"


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["epoch"])
            ys.append(float(v))
    return xs, ys


def _integer_epochs(ax, epochs) -> None:
    """Epochs are integers: no 0.5 ticks on a short run.  The locator falls back to fractions when
    fewer than two integers are in view, so a run of one or two epochs gets a wider x range."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and max(epochs) - min(epochs) < 2:
        ax.set_xlim(min(epochs) - 1, max(epochs) + 1)


def runs_figure(run_dirs, labels=None, title: str | None = None):
    """The figure of :func:`plot_runs` (a :class:`matplotlib.figure.Figure`, not saved).

    Every legend entry carries the run's numeric feature dimension d (:func:`feature_dim`; appended
    to a given label that does not already say it).  On the NC2 panels (log axes) values at or
    below :data:`ROUNDING_FLOOR` -- a fixed ETF classifier's W, exactly equinorm and equiangular --
    are not drawn, so the axis range follows the measured curves; such a series is listed in the
    panel's legend as "0 (fixed)"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("give at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    logs = [[r for r in read_log(p) if "nc1" in r] for p in run_dirs]
    if not any(logs):
        raise ValueError(f"no evaluated epoch in {', '.join(map(str, run_dirs))}: nothing to plot")
    if labels is None:
        labels = [run_label(p) for p in run_dirs]
    else:
        dims = [feature_dim(p) for p in run_dirs]
        labels = [lab if d is None or f"d={d}" in lab else f"{lab}, d={d}" for lab, d in zip(labels, dims)]

    ncols = 4
    nrows = math.ceil(len(PANELS) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(run_dirs))]
    epochs = [r["epoch"] for records in logs for r in records]
    for ax, (name, ylabel, keys, scale) in zip(axes, PANELS):
        nc2 = name.startswith("NC2")
        fixed = []  # (label, color) of series that are 0 up to rounding throughout
        for records, label, color in zip(logs, labels, colors):
            for j, (key, style) in enumerate(keys):
                xs, ys = _series(records, key)
                if nc2 and xs and all(abs(y) <= ROUNDING_FLOOR for y in ys):
                    fixed.append((label, color, style))
                    continue
                if scale == "log":
                    floor = ROUNDING_FLOOR if nc2 else 0.0
                    xs, ys = [x for x, y in zip(xs, ys) if y > floor], [y for y in ys if y > floor]
                if xs:
                    ax.plot(xs, ys, style, color=color, marker="." if len(xs) < 30 else None,
                            label=label if j == 0 else None)
        if fixed:
            handles = [ax.plot([], [], style, color=color, label=f"{label}: 0 (fixed)")[0]
                       for label, color, style in fixed]
            ax.legend(handles=handles, fontsize=7, loc="best", title="dashed W at 0, not drawn",
                      title_fontsize=7)
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=1e-4)
        else:
            ax.set_yscale(scale)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        _integer_epochs(ax, epochs)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(PANELS):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)), fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_runs(run_dirs, out, labels=None, title: str | None = None, dpi: int = 120) -> Path:
    """Draw :data:`PANELS` for the runs in ``run_dirs`` into the image file ``out`` (PNG, PDF, SVG
    by extension) (:func:`runs_figure`).  ``labels`` (one per run) overrides :func:`run_label`.
    Returns ``out``.

    Raises FileNotFoundError naming a directory without ``log.jsonl``, ValueError if no run has
    an evaluated epoch or the labels do not match the runs."""
    return _save(runs_figure(run_dirs, labels=labels, title=title), out, dpi=dpi)


# ------------------------------------------------------------------------------------------------
# the landscape survey
# ------------------------------------------------------------------------------------------------
#: Colours of the kinds of critical points (nclab.ufm.landscape.KINDS).
KIND_COLORS = {
    "global_minimiser": "C2",
    "strict_saddle": "C3",
    "local_non_global_minimiser": "C1",
    "not_critical": "C7",
    "inconclusive": "C4",
}


def _figure(ncols: int, width: float = 6.0, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False).ravel()


def _save(fig, out, dpi: int = 120) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def plot_starts(survey: dict, out) -> Path:
    """Write :func:`starts_figure` to ``out``; returns ``out``."""
    return _save(starts_figure(survey), out)


def starts_figure(survey: dict):
    """(a) of the survey: left, the fraction of random starts whose end point is a certified
    global minimiser, per problem and d, one bar per solver; right, the iterations of every run
    per solver (log axis; a capped gradient-descent run is an open marker)."""
    s = survey["settings"]
    solvers = s["solvers"]
    summary = survey["starts"]["summary"]
    groups = list(dict.fromkeys((r["config"], r["d"]) for r in summary))
    fig, (ax0, ax1) = _figure(2, width=7.0)
    width = 0.8 / max(len(solvers), 1)
    by = {(r["config"], r["d"], r["solver"]): r for r in summary}
    for j, name in enumerate(solvers):
        xs, ys, inc = [], [], []
        for i, (config, d) in enumerate(groups):
            r = by.get((config, d, name))
            if r is not None:
                xs.append(i + (j - (len(solvers) - 1) / 2) * width)
                ys.append(r["fraction_global"])
                inc.append(r["kinds"].get("inconclusive", 0) / r["runs"])
        ax0.bar(xs, ys, width=width, color=f"C{j}", label=name)
        ax0.bar(xs, inc, width=width, bottom=ys, color="none", edgecolor=f"C{j}", hatch="///", lw=0.5)
    from matplotlib.patches import Patch

    handles, names = ax0.get_legend_handles_labels()
    handles.append(Patch(facecolor="none", edgecolor="k", hatch="///"))
    names.append("inconclusive")
    ax0.set_xticks(range(len(groups)), [f"{c}\nd={d}" for c, d in groups], fontsize=7, rotation=90)
    ax0.set_ylim(0, 1.05)
    ax0.set_xlabel("problem and feature dimension d")
    ax0.set_ylabel("fraction of starts at the certified global minimum")
    ax0.set_title(f"random starts (K={s['K']}, n={s['n']}, {s['seeds']} seeds per setting; "
                  f"gd capped at {s['gd_max_iter']} it)", fontsize=10)
    ax0.legend(handles, names, fontsize=7, ncols=len(solvers) + 1, loc="lower center", bbox_to_anchor=(0.5, 1.06), frameon=False)
    configs = list(dict.fromkeys(r["config"] for r in survey["starts"]["runs"]))
    for r in survey["starts"]["runs"]:
        j = solvers.index(r["solver"]) if r["solver"] in solvers else 0
        k = configs.index(r["config"])
        x = j + (k - (len(configs) - 1) / 2) * 0.15
        capped = r["stop_reason"] == "max_iter"
        ax1.plot([x], [max(r["iterations"], 1)], "o", ms=4, color=f"C{k}",
                 mfc="none" if capped else f"C{k}", alpha=0.7)
    for k, c in enumerate(configs):
        ax1.plot([], [], "o", color=f"C{k}", label=c)
    ax1.plot([], [], "o", color="k", mfc="none", label=f"capped ({s['gd_max_iter']} it)")
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(solvers)), solvers)
    ax1.set_xlabel("solver")
    ax1.set_ylabel("iterations")
    ax1.set_title("iterations to convergence (or to the cap)", fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(True, which="major", alpha=0.3)
    return fig


def plot_catalogue(survey: dict, out) -> Path:
    """Write :func:`catalogue_figure` to ``out``; returns ``out``."""
    return _save(catalogue_figure(survey), out)


def catalogue_figure(survey: dict):
    """(b) of the survey: left, every catalogued point's relative objective gap (f - f*)/|f*|
    against the smallest eigenvalue of its Hessian (orbit deflated), coloured by kind (symlog
    axes: a strict saddle sits left of 0, a minimiser at lambda_min >= 0 and gap 0); right, the
    full Hessian spectrum of a strict saddle next to a global minimiser's (dense, small problem)."""
    cat = survey["catalogue"]
    fig, (ax0, ax1) = _figure(2)
    seen = set()
    lams = []
    gap_floor = 1e-16
    for p in cat["points"]:
        lam, gap = p["lambda_min"], p["relative_gap"]
        if lam is None or gap is None:
            continue
        lams.append(abs(lam))
        marker = {"origin": "s", "lowdim": "o", "found": "^"}.get(p["point"], "o")
        ax0.plot([lam], [max(gap, gap_floor)], marker, color=KIND_COLORS.get(p["kind"], "k"), ms=5, alpha=0.75,
                 label=None if (p["kind"], p["point"]) in seen else f"{p['kind']} ({p['point']})")
        seen.add((p["kind"], p["point"]))
    # symlog: linear within the smallest eigenvalue scale that matters, ticks every other decade
    top = math.ceil(math.log10(max(lams))) if lams and max(lams) > 0 else 0
    lin = 10.0 ** (top - 6)
    ax0.set_xscale("symlog", linthresh=lin)
    decades = [10.0 ** e for e in range(top - 6, top + 1, 2)]
    ax0.set_xticks([-v for v in reversed(decades)] + [0.0] + decades)
    ax0.tick_params(axis="x", labelsize=7)
    ax0.set_yscale("log")
    ax0.axhline(gap_floor, color="k", lw=0.4, ls=":")
    ax0.axvline(0.0, color="k", lw=0.6)
    ax0.set_xlabel(r"$\lambda_{\min}$ of the Hessian (symmetry orbit deflated)")
    ax0.set_ylabel(r"relative objective gap $(f - f^*)/|f^*|$ (floor $10^{-16}$)")
    ax0.set_title("critical points by kind", fontsize=10)
    ax0.legend(fontsize=7)
    ax0.grid(True, which="major", alpha=0.3)
    sp = cat["spectra"]
    for name, color in (("saddle", "C3"), ("minimiser", "C2")):
        ev = sp[name]["eigenvalues"]
        ax1.plot(range(1, len(ev) + 1), ev, "o", ms=3, color=color,
                 label=f"{sp[name]['point']}: {sp[name]['kind']}")
    ev_all = [abs(v) for name in ("saddle", "minimiser") for v in sp[name]["eigenvalues"] if v != 0]
    ax1.set_yscale("symlog", linthresh=max(min(ev_all), 1e-12) if ev_all else 1e-8)
    ax1.axhline(0.0, color="k", lw=0.6)
    prob = sp["problem"]
    ax1.set_title("Hessian spectrum, " + ", ".join(f"{k}={v}" for k, v in prob.items() if k in ("loss", "K", "n", "d")),
                  fontsize=10)
    ax1.set_xlabel("eigenvalue index (ascending; orbit deflated)")
    ax1.set_ylabel("Hessian eigenvalue")
    ax1.legend(fontsize=8)
    ax1.grid(True, which="major", alpha=0.3)
    return fig
