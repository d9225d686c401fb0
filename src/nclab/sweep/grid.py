"""The numbers behind a sweep's figures: a value aggregated on a grid of one or two options.

:func:`aggregate` groups the rows of a sweep table (:func:`nclab.sweep.read_table`) that finished
without an error by the column ``x`` (and ``y`` for a heat map, ``group`` for several lines) and
reduces ``value`` over everything else in a cell -- the seeds, and any option not on an axis --
with ``agg`` (mean, median, min or max), keeping the spread (min and max) and the count for the
bands of a line plot.  ``value`` is a numeric or boolean column, or ``column=text`` for the
fraction of rows where the column equals the text (``kind=global_minimiser``).

The theory boundary: where the table has the CE/MSE ``beta`` = sqrt(n lw lh) and ``K``, the
collapse/zero-solution boundary beta = 1/K (REFERENCE.md section 2) is located on the grid as the
points where log(K beta) crosses 0, interpolated linearly in grid index (exact for geometric
grids, where log beta is linear in the index).  The figure (``nclab sweep plot``) draws them;
this module only computes.

>>> rows = [{"x": 1, "seed": s, "v": float(s), "error": None} for s in range(3)]
>>> g = aggregate(rows, "x", "v")
>>> g["x"], g["lines"][""]["center"], g["lines"][""]["low"], g["lines"][""]["high"]
([1], [1.0], [0.0], [2.0])
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

__all__ = ["AGGREGATES", "aggregate", "boundary_points"]

AGGREGATES = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "min": min,
    "max": max,
}


def _rows(table) -> list[dict]:
    if table is None:
        return []
    if isinstance(table, list):
        return table
    if hasattr(table, "to_pylist"):
        return table.to_pylist()
    if hasattr(table, "to_dict"):  # pandas
        return table.to_dict("records")
    raise ValueError(f"table must be a pyarrow Table, a pandas DataFrame or a list of rows, got {type(table).__name__}")


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _value_of(row: dict, value: str):
    if "=" in value:
        col, text = value.split("=", 1)
        v = row.get(col)
        return None if v is None else float(str(v) == text)
    v = row.get(value)
    if _missing(v):
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    raise ValueError(f"value column {value!r} holds text ({v!r}); plot column=TEXT for the fraction of rows "
                     f"equal to TEXT, e.g. {value}={v}")


def _sort_key(v):
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


def _check_columns(rows: list[dict], names: Iterable[str | None]) -> None:
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    for name in names:
        if name is None:
            continue
        col = name.split("=", 1)[0]
        if col not in columns:
            raise ValueError(f"no column {col!r} in the table; columns: {', '.join(sorted(columns))}")


def _matches(cell, wanted) -> bool:
    """``cell == wanted``, numbers compared as numbers (``tau=10`` keeps 10.0), text as text."""
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        try:
            return float(cell) == float(wanted)
        except (TypeError, ValueError):
            return False
    return str(cell) == str(wanted) or (isinstance(cell, bool) and str(cell).lower() == str(wanted).lower())


def _where(rows: list[dict], where: dict | None) -> list[dict]:
    if not where:
        return rows
    return [r for r in rows if all(_matches(r.get(k), v) for k, v in where.items())]


def boundary_points(kbeta: list[list[float | None]]) -> tuple[list[tuple[float, float]], str]:
    """``(points, axis)``: the points (x index, y index) where log(K beta) crosses 0 on a grid
    ``kbeta[iy][ix]``, found along x in each row (``axis`` "x"), or, when no row crosses, along y
    in each column (``axis`` "y")."""

    def crossings(line):
        pts = []
        for i in range(len(line) - 1):
            a, b = line[i], line[i + 1]
            if a is None or b is None or a <= 0 or b <= 0:
                continue
            la, lb = math.log(a), math.log(b)
            if la == 0.0:
                pts.append(float(i))
            elif (la < 0 < lb) or (lb < 0 < la):
                pts.append(i + la / (la - lb))
        if line and line[-1] is not None and line[-1] > 0 and math.log(line[-1]) == 0.0:
            pts.append(float(len(line) - 1))
        return pts

    pts = [(t, float(iy)) for iy, row in enumerate(kbeta) for t in crossings(row)]
    if pts:
        return pts, "x"
    ny, nx = len(kbeta), len(kbeta[0]) if kbeta else 0
    return [(float(ix), t) for ix in range(nx) for t in crossings([kbeta[iy][ix] for iy in range(ny)])], "y"


def aggregate(table: Any, x: str, value: str, y: str | None = None, *, group: str | None = None,
              agg: str = "mean", where: dict | None = None) -> dict:
    """Aggregate ``value`` over the cells of ``x`` (and ``y``) (module docstring).

    Returns a JSON-ready dict: ``x`` (sorted distinct values), ``value``, ``agg``, ``rows`` (rows
    used), ``failed`` (rows skipped for an error) and

    * with ``y`` (a heat map): ``y``, ``grid[iy][ix]`` (aggregated value, None for an empty cell),
      ``count[iy][ix]``, ``kbeta[iy][ix]`` (mean K beta, or None), ``boundary`` (list of
      (x index, y index) points of beta = 1/K, empty when the grid does not cross it) and
      ``boundary_axis`` ("x": one point per row, "y": one per column; :func:`boundary_points`);
    * without ``y`` (lines): ``lines`` = ``{group value as text ("" without group): {"center",
      "low", "high", "count"}}`` (lists over ``x``, None where empty) and ``boundary_x`` (the x
      values where beta = 1/K, one per group that crosses it; log K beta interpolated linearly
      in log x, exact when K beta is a power of x as it is of lambda, lw or beta).
    """
    if agg not in AGGREGATES:
        raise ValueError(f"agg must be one of {', '.join(AGGREGATES)}, got {agg!r}")
    rows = _rows(table)
    _check_columns(rows, (x, y, group, value, *(where or ())))
    rows = _where(rows, where)
    failed = sum(r.get("error") is not None for r in rows)
    rows = [r for r in rows if r.get("error") is None and not _missing(r.get(x)) and (y is None or not _missing(r.get(y)))]
    reduce = AGGREGATES[agg]
    xs = sorted({r[x] for r in rows}, key=_sort_key)
    xi = {v: i for i, v in enumerate(xs)}
    out: dict = {"x": xs, "value": value, "agg": agg, "rows": len(rows), "failed": failed}

    def kb(r):
        K, beta = r.get("K"), r.get("beta")
        return None if _missing(K) or _missing(beta) else K * beta

    if y is not None:
        ys = sorted({r[y] for r in rows}, key=_sort_key)
        yi = {v: i for i, v in enumerate(ys)}
        cells: dict = {}
        kcells: dict = {}
        for r in rows:
            cell = (yi[r[y]], xi[r[x]])
            v = _value_of(r, value)
            if v is not None:
                cells.setdefault(cell, []).append(v)
            k = kb(r)
            if k is not None:
                kcells.setdefault(cell, []).append(k)
        grid = [[reduce(cells[(j, i)]) if (j, i) in cells else None for i in range(len(xs))] for j in range(len(ys))]
        count = [[len(cells.get((j, i), ())) for i in range(len(xs))] for j in range(len(ys))]
        kbeta = [[statistics.fmean(kcells[(j, i)]) if (j, i) in kcells else None for i in range(len(xs))]
                 for j in range(len(ys))]
        points, axis = boundary_points(kbeta) if kcells else ([], "x")
        out.update(y=ys, grid=grid, count=count, kbeta=kbeta, boundary=points, boundary_axis=axis)
        return out

    lines: dict = {}
    kline: dict = {}
    for r in rows:
        g = "" if group is None else str(r.get(group))
        v = _value_of(r, value)
        if v is not None:
            lines.setdefault(g, {}).setdefault(xi[r[x]], []).append(v)
        k = kb(r)
        if k is not None:
            kline.setdefault(g, {}).setdefault(xi[r[x]], []).append(k)
    result = {}
    for g in sorted(lines, key=_sort_key):
        cells = lines[g]
        result[g] = {
            "center": [reduce(cells[i]) if i in cells else None for i in range(len(xs))],
            "low": [min(cells[i]) if i in cells else None for i in range(len(xs))],
            "high": [max(cells[i]) if i in cells else None for i in range(len(xs))],
            "count": [len(cells.get(i, ())) for i in range(len(xs))],
        }
    boundary_x = []
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    for g, cells in kline.items():
        line = [statistics.fmean(cells[i]) if i in cells else None for i in range(len(xs))]
        for t in boundary_points([line])[0]:
            i = int(math.floor(t[0]))
            frac = t[0] - i
            if not numeric:
                continue
            if frac == 0:
                boundary_x.append(float(xs[i]))
            elif xs[i] > 0:  # K beta is a power of x (lambda, lw, beta): exact in log-log
                boundary_x.append(math.exp(math.log(xs[i]) + frac * (math.log(xs[i + 1]) - math.log(xs[i]))))
            else:
                boundary_x.append(xs[i] + frac * (xs[i + 1] - xs[i]))
    out.update(lines=result, boundary_x=sorted(set(boundary_x)))
    return out
