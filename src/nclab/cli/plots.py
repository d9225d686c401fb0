"""Figures of nclab results (the presentation layer: the only place besides the CLI that uses
matplotlib).

* :func:`plot_result` -- a UFM solve (:func:`nclab.ufm.run.solve`): objective gap and nc1 (or the
  sphere's frame-potential excess) against iterations, log axes.
"""

from __future__ import annotations

import math
from pathlib import Path

from nclab.ufm.run import gap_history

__all__ = ["plot_result"]


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
