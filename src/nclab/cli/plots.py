"""Figures of nclab results (the presentation layer: the only place besides the CLI that uses
matplotlib).

* :func:`plot_result` -- a UFM solve (:func:`nclab.ufm.run.solve`): objective gap and nc1 (or the
  sphere's frame-potential excess) against iterations, log axes.
* :func:`plot_runs` -- Papyan-style figures of neural collapse during training, several runs
  overlaid: one panel per quantity against the epoch (Papyan, Han & Donoho 2020, figures 2-7):
  train/test accuracy, training loss, nc1 = Tr(Sigma_W Sigma_B^+)/K (log axis), equinorm of the
  centred class means (solid) and of the classifier rows (dashed), the max-angle measure of both,
  nc3 (self-duality), nc4 (classifier vs nearest class mean) and CDNV.  Each run directory written
  by ``nclab train`` is one colour; the legend names it by its head and feature dimension (or by
  ``labels``).  A fixed ETF classifier has equinorm/max-angle of W equal to 0 (up to rounding): on
  a log axis its dashed line sits at the rounding floor or is absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nclab.nets.rundir import CONFIG, read_log
from nclab.ufm.run import gap_history

__all__ = ["plot_result", "plot_runs", "run_label", "PANELS"]


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


#: (title, [(log key, line style)], y scale) of each panel, in order.
PANELS = (
    ("accuracy (solid train, dashed test)", [("train_acc", "-"), ("test_acc", "--")], "linear"),
    ("training loss", [("train_loss", "-")], "log"),
    ("NC1: Tr(Σ_W Σ_B⁺)/K", [("nc1", "-")], "log"),
    ("NC2 equinorm (solid means, dashed W)", [("nc2_equinorm_means", "-"), ("nc2_equinorm_W", "--")], "log"),
    ("NC2 max-angle (solid means, dashed W)", [("nc2_maxangle_means", "-"), ("nc2_maxangle_W", "--")], "log"),
    ("NC3: |W/|W| − M/|M||²", [("nc3", "-")], "log"),
    ("NC4: classifier ≠ nearest mean", [("nc4", "-")], "symlog"),
    ("CDNV", [("cdnv", "-")], "log"),
)


def run_label(run_dir: str | Path) -> str:
    """``"<head> d=<d>"`` from the run's config.json (the directory name if there is none)."""
    run_dir = Path(run_dir)
    try:
        cfg = json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError):
        return run_dir.name
    d = cfg.get("feature_dim")
    return f"{cfg.get('head', '?')} d={'default' if d is None else d} ({run_dir.name})"


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["epoch"])
            ys.append(float(v))
    return xs, ys


def plot_runs(run_dirs, out, labels=None, title: str | None = None, dpi: int = 120) -> Path:
    """Draw :data:`PANELS` for the runs in ``run_dirs`` into the image file ``out`` (PNG, PDF, SVG
    by extension).  ``labels`` (one per run) overrides :func:`run_label`.  Returns ``out``.

    Raises FileNotFoundError naming a directory without ``log.jsonl``, ValueError if no run has
    an evaluated epoch or the labels do not match the runs."""
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
    labels = labels or [run_label(p) for p in run_dirs]

    ncols = 4
    nrows = math.ceil(len(PANELS) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(run_dirs))]
    for ax, (name, keys, scale) in zip(axes, PANELS):
        for records, label, color in zip(logs, labels, colors):
            for j, (key, style) in enumerate(keys):
                xs, ys = _series(records, key)
                if scale == "log":
                    xs, ys = [x for x, y in zip(xs, ys) if y > 0], [y for y in ys if y > 0]
                if xs:
                    ax.plot(xs, ys, style, color=color, marker="." if len(xs) < 30 else None,
                            label=label if j == 0 else None)
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=1e-4)
        else:
            ax.set_yscale(scale)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(PANELS):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)), fontsize=9)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
