"""`nclab sweep`: run a sweep of solves or landscape checks, and plot its phase diagrams.

A thin layer over :mod:`nclab.sweep`: ``nclab sweep CONFIG.yaml --out DIR`` (the same as
``nclab sweep run ...``) calls :func:`nclab.sweep.run_sweep` with a progress bar (done, failed,
remaining) and prints an 80-column summary; ``nclab sweep plot DIR`` draws
:func:`nclab.sweep.aggregate`'s grid as a heat map (two axes: colour bar, the theory's boundary
beta = 1/K where the table has beta and K) or as lines (one axis: the aggregate over seeds as a
line, their min..max as a band, beta = 1/K as a dashed vertical line), a PNG, and the table as
CSV on request.

Exit status: 0 when every job of the config has finished without an error; 1 when some job
failed (the failures are recorded in the table with their error, the others ran; a warning line
says how many and how to retry them) -- as ``nclab ufm solve`` exits 1 on a run that did not
end as asked; 2 with one ``error:`` line for a bad config or option (nothing ran).

    nclab sweep examples/sweeps/beta_phase.yaml --out results/beta
    nclab sweep examples/sweeps/beta_phase.yaml --out results/beta --backend ray --workers 2
    nclab sweep CONFIG.yaml --out DIR --backend ray --address auto      # join a running cluster
    nclab sweep plot results/beta --x beta --y K --value nc2_etf_W --log-value
    nclab sweep plot results/tau --x tau --value relative_gap --csv tau.csv
"""

from __future__ import annotations

import io
import math
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from nclab.cli.console import console, err_console, fail, warn


class _DefaultRun(TyperGroup):
    """A group whose first argument, when it is not a sub-command, is the config of ``run``:
    ``nclab sweep CONFIG ...`` means ``nclab sweep run CONFIG ...``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    name="sweep",
    cls=_DefaultRun,
    help="Sweeps over options and seeds: `nclab sweep CONFIG.yaml --out DIR` runs one (same as "
         "`nclab sweep run`), `nclab sweep plot DIR` draws it.",
    no_args_is_help=True,
    add_completion=False,
)


class Backend(str, Enum):
    local = "local"
    ray = "ray"


class Agg(str, Enum):
    mean = "mean"
    median = "median"
    min = "min"
    max = "max"


def _fmt(v, spec: str = ".3g") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec) if math.isfinite(v) else str(v)
    return str(v)


def summary_table(summary, statuses: dict[str, int]) -> Table:
    """The final summary of a sweep (fits 80 columns)."""
    table = Table(title=f"sweep {summary.out}", title_justify="left")
    table.add_column("quantity", max_width=24)
    table.add_column("value", max_width=50, overflow="fold")
    rate = summary.ran / summary.seconds if summary.seconds > 0 and summary.ran else None
    rows = [
        ("jobs in the config", str(summary.total)),
        ("finished before (kept)", str(summary.reused)),
        ("run now", str(summary.ran)),
        ("done", str(summary.done)),
        ("failed", ("[red]" if summary.failed else "") + str(summary.failed)),
        ("remaining", str(summary.remaining)),
        ("backend", f"{summary.backend}, {summary.workers} worker(s), {summary.chunk} job(s) per task"),
        ("seconds", f"{summary.seconds:.1f}" + (f" ({rate:.1f} jobs/s)" if rate else "")),
        ("results", str(Path(summary.out) / "results")),
    ]
    if statuses:
        rows.append(("status / kind", ", ".join(f"{k} {n}" for k, n in sorted(statuses.items()))))
    for r in rows:
        table.add_row(*r)
    return table


def _statuses(out: Path, keys: list[str]) -> dict[str, int]:
    from nclab.sweep import read_table

    table = read_table(out, keys)
    if table is None:
        return {}
    column = "kind" if "kind" in table.column_names else "status"
    counts: dict[str, int] = {}
    for v in table.column(column).to_pylist():
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


@sweep_app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="the sweep's YAML config (examples/sweeps/*.yaml)"),
    out: Path = typer.Option(..., "--out", help="folder of the results (created; rerun to resume)"),
    backend: Backend = typer.Option(Backend.local, "--backend", help="local (a process pool) | ray"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (auto, "
                                                                  "ray://HOST:10001); none starts Ray here"),
    workers: Optional[int] = typer.Option(None, "--workers", help="worker processes (default: the CPUs)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run the jobs that failed before again"),
    chunk: Optional[int] = typer.Option(None, "--chunk", help="jobs per task (default: about 4 tasks "
                                                              "per worker, at most 32)"),
) -> None:
    """Run the jobs of CONFIG that DIR does not hold yet; rows are appended as jobs finish."""
    from nclab.sweep import load_config, run_sweep

    for flag, value in (("--workers", workers), ("--chunk", chunk)):
        if value is not None and value < 1:
            fail(f"{flag} must be >= 1, got {value}")
    if address is not None and backend is not Backend.ray:
        fail(f"--address {address} joins a Ray cluster: add --backend ray")
    if out.exists() and not out.is_dir():
        fail(f"--out must be a folder, got the file {out}")
    try:
        cfg = load_config(config)
    except ModuleNotFoundError as err:
        fail(str(err))
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("done {task.fields[done]}  failed {task.fields[failed]}  remaining "
                             "{task.fields[remaining]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console) as progress:
        task = progress.add_task("sweep", total=len(cfg.jobs), done=0, failed=0, remaining=len(cfg.jobs))

        def report(c: dict) -> None:
            progress.update(task, completed=c["done"] + c["failed"], done=c["done"], failed=c["failed"],
                            remaining=c["remaining"])

        try:
            summary = run_sweep(cfg, out, backend=backend.value, workers=workers, address=address,
                                retry_failed=retry_failed, progress=report, chunk=chunk)
        except ModuleNotFoundError as err:
            fail(str(err))
    console.print(summary_table(summary, _statuses(out, cfg.keys)))
    if summary.failed:
        first = next(iter(summary.errors.values()))
        warn(f"{summary.failed} job(s) failed (first: {first[:120]}); their errors are in the table's "
             "'error' column; rerun with --retry-failed to run them again")
        raise typer.Exit(code=1)


# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------
def _label(v) -> str:
    return format(v, ".3g") if isinstance(v, float) else str(v)


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def heatmap_figure(g: dict, x: str, y: str, log_value: bool = False):
    """A heat map of :func:`nclab.sweep.aggregate`'s grid: cells in grid order (ticks are the
    values), a colour bar, and the beta = 1/K boundary when the grid crosses it."""
    import numpy as np
    from matplotlib.colors import LogNorm

    fig, ax = _figure()
    data = np.array([[np.nan if v is None else v for v in row] for row in g["grid"]], dtype=float)
    norm = None
    if log_value:
        positive = data[np.isfinite(data) & (data > 0)]
        if positive.size:
            norm = LogNorm(vmin=positive.min(), vmax=max(positive.max(), positive.min() * 10))
            data = np.where(data > 0, data, positive.min())  # 0 shows as the smallest colour
    image = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(f"{g['value']} ({g['agg']} over seeds)")
    ax.set_xticks(range(len(g["x"])), [_label(v) for v in g["x"]], rotation=45 if len(g["x"]) > 6 else 0)
    ax.set_yticks(range(len(g["y"])), [_label(v) for v in g["y"]])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if g["boundary"]:  # a staircase through the cells: the crossing inside each row (or column)
        path = []
        if g["boundary_axis"] == "x":
            for bx, by in sorted(g["boundary"], key=lambda p: (p[1], p[0])):
                path += [(bx, by - 0.5), (bx, by + 0.5)]
        else:
            for bx, by in sorted(g["boundary"]):
                path += [(bx - 0.5, by), (bx + 0.5, by)]
        ax.plot([p[0] for p in path], [p[1] for p in path], color="white", ls="--", lw=2,
                label="theory: beta = 1/K")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{g['value']} over {x} and {y} ({g['rows']} jobs)")
    return fig


def lines_figure(g: dict, x: str, log_x: bool = False, log_value: bool = False, group: str | None = None):
    """Lines of :func:`nclab.sweep.aggregate`: the aggregate over seeds, their min..max as a band,
    beta = 1/K as dashed vertical lines."""
    fig, ax = _figure()
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in g["x"])
    xs = list(g["x"]) if numeric else list(range(len(g["x"])))
    for name, line in g["lines"].items():
        pts = [(xv, c, lo, hi) for xv, c, lo, hi in zip(xs, line["center"], line["low"], line["high"]) if c is not None]
        if not pts:
            continue
        label = f"{group}={name}" if group else g["agg"]
        (handle,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
        ax.fill_between([p[0] for p in pts], [p[2] for p in pts], [p[3] for p in pts], color=handle.get_color(),
                        alpha=0.2, lw=0)
    for i, b in enumerate(g.get("boundary_x", [])):
        ax.axvline(b, color="k", ls="--", lw=1, label="theory: beta = 1/K" if i == 0 else None)
    if not numeric:
        ax.set_xticks(xs, [_label(v) for v in g["x"]])
    if log_x and numeric:
        ax.set_xscale("log")
    if log_value:
        ax.set_yscale("symlog", linthresh=1e-16)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{g['value']} ({g['agg']}; band: min..max over seeds)")
    ax.set_title(f"{g['value']} against {x} ({g['rows']} jobs)")
    ax.legend(fontsize=8)
    return fig


def _save(fig, path: Path) -> Path:
    from nclab.io import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write(path, buf.getvalue())


def _parse_where(items: list[str]) -> dict:
    where = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--where takes COLUMN=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        where[k] = v
    return where


@sweep_app.command("plot")
def plot_command(
    folder: Path = typer.Argument(..., help="a sweep folder (written by nclab sweep --out)"),
    x: str = typer.Option(..., "--x", help="the column on the x axis (an option: lambda, beta, d, tau, ...)"),
    value: str = typer.Option(..., "--value", help="the column shown (relative_gap, nc1, converged, ...), or "
                                                   "COLUMN=TEXT for a fraction (kind=global_minimiser)"),
    y: Optional[str] = typer.Option(None, "--y", help="a second option: a heat map (none: lines)"),
    group: Optional[str] = typer.Option(None, "--group", help="lines: one line per value of this column"),
    agg: Agg = typer.Option(Agg.mean, "--agg", help="how a cell's rows are reduced: mean | median | min | max"),
    where: List[str] = typer.Option([], "--where", help="keep the rows with COLUMN=VALUE (repeatable)"),
    log_x: bool = typer.Option(False, "--log-x", help="lines: logarithmic x axis"),
    log_value: bool = typer.Option(False, "--log-value", help="logarithmic colour scale / y axis"),
    png: Optional[Path] = typer.Option(None, "--png", help="the figure (default DIR/VALUE_by_X[_Y].png)"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="also write the whole table as CSV here"),
) -> None:
    """Draw a sweep's table: a heat map over --x and --y, or lines over --x with seeds as bands."""
    from nclab.io import atomic_write
    from nclab.sweep import aggregate, read_table

    if not folder.is_dir():
        fail(f"{folder} is not a sweep folder (no such directory)")
    try:
        table = read_table(folder)
    except ModuleNotFoundError as err:
        fail(str(err))
    if table is None:
        fail(f"{folder} holds no results yet (run nclab sweep CONFIG --out {folder} first)")
    g = aggregate(table, x, value, y, group=group, agg=agg.value, where=_parse_where(where))
    if not g["rows"]:
        fail("no finished rows to plot (every job failed, or --where kept none)")
    fig = heatmap_figure(g, x, y, log_value) if y else lines_figure(g, x, log_x, log_value, group)
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{value}_by_{x}" + (f"_{y}" if y else ""))
    path = _save(fig, png if png is not None else folder / f"{stem}.png")
    console.print(f"wrote {path} ({g['rows']} jobs" + (f", {g['failed']} failed left out" if g["failed"] else "") + ")")
    if csv is not None:
        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        atomic_write(csv, buf.getvalue())
        console.print(f"wrote {csv} ({table.num_rows} rows, {table.num_columns} columns)")


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
