"""Papyan-style figures of neural collapse during training, several runs overlaid.

One panel per quantity against the epoch (Papyan, Han & Donoho 2020, figures 2-7): train/test
accuracy, training loss, nc1 = Tr(Sigma_W Sigma_B^+)/K (log axis), equinorm of the centred class
means (solid) and of the classifier rows (dashed), the max-angle measure of both, nc3 (self-duality)
and nc4 (classifier vs nearest class mean).  Each run directory written by ``nclab train`` is one
colour; the legend names it by its head and feature dimension (or by ``labels``).  A fixed ETF
classifier has equinorm/max-angle of W equal to 0 (up to rounding): on a log axis its dashed line
sits at the rounding floor or is absent.

Example
-------
>>> from nclab.nets.plot import plot_runs                              # doctest: +SKIP
>>> plot_runs(["runs/learned", "runs/etf"], "collapse.png")
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nclab.nets.rundir import CONFIG, read_log

__all__ = ["plot_runs", "run_label", "PANELS"]

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
