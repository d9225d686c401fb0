"""What the zhu2021 claims share: the paper's citation, seeds, the solver cap, figures and JSON files.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state) and
written atomically as PNGs under ``ctx.out``; the returned :class:`~nclab.reproduce.claims.Figure`
names the file relative to ``ctx.out``.
"""

from __future__ import annotations

import io
import math
from typing import Any

from nclab.io import atomic_write, write_json_atomic
from nclab.reproduce.claims import Context, Figure

#: Zhu et al. 2021, as the claims cite it.
PAPER = "Zhu et al. 2021"
TITLE = "A geometric analysis of neural collapse with unconstrained features"
CITATION = ("Zhihui Zhu, Tianyu Ding, Jinxin Zhou, Xiao Li, Chong You, Jeremias Sulam, Qing Qu. "
            "A geometric analysis of neural collapse with unconstrained features. NeurIPS 2021.")


def max_iter(ctx: Context, default: int | None = None) -> int | None:
    """The iteration cap of every solver of this target: ``ctx.option("max_iter")`` (a test hook that
    breaks the runs on purpose), else ``default`` (None: the solver's own)."""
    cap = ctx.option("max_iter")
    return default if cap is None else int(cap)


def seeds(ctx: Context, count: int) -> list[int]:
    """``count`` seeds derived from the context's base seed: ctx.seed, ctx.seed + 1, ..."""
    return [ctx.seed + i for i in range(count)]


def finite(value: Any) -> float | None:
    """A JSON-ready float (None for None, NaN or infinity)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def worst(values) -> float:
    """The largest value, with None and NaN counted as infinitely bad (so a missing number fails)."""
    out = 0.0
    for v in values:
        if v is None or not math.isfinite(float(v)):
            return math.inf
        out = max(out, float(v))
    return out


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.8):
    """A bare matplotlib figure with ``ncols`` axes side by side (no pyplot global state)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(ctx: Context, fig, name: str, caption: str) -> Figure:
    """Write ``fig`` as ``ctx.out/name`` (PNG, atomically) and return its report entry."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(ctx.out / name, buf.getvalue())
    return Figure(path=name, caption=caption)


def save_json(ctx: Context, name: str, obj) -> str:
    """Write ``obj`` as ``ctx.out/name`` (JSON, atomically); returns ``name`` for the evidence."""
    write_json_atomic(ctx.out / name, obj)
    return name
