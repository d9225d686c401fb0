"""`nclab metrics`, `nclab demo` and `nclab bench`."""

from __future__ import annotations

import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from nclab.cli.console import console, err_console, fail
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table



class Empty(str, Enum):
    raise_ = "raise"
    drop = "drop"


def metrics_table(values: dict, title: str) -> Table:
    from nclab.metrics import METRIC_DESCRIPTIONS, METRIC_NAMES

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("definition (REFERENCE.md section 3)", style="dim")
    for name in METRIC_NAMES:
        v = values.get(name)
        table.add_row(name, "null" if v is None else f"{v:.6g}", METRIC_DESCRIPTIONS[name])
    return table


def metrics_command(
    features: Path = typer.Argument(..., help=escape("FEATURES.npz (features, labels, [classifier, bias]) or features.npy")),
    labels: Optional[Path] = typer.Option(None, "--labels", help="labels .npy (when FEATURES is an .npy)"),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="classifier (K x d) .npy (with an .npy FEATURES)"),
    bias: Optional[Path] = typer.Option(None, "--bias", help="bias (K,) .npy (with an .npy FEATURES)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON here"),
    batch_size: int = typer.Option(65536, "--batch-size", min=1, help="rows per batch (streams memory-mapped .npy)"),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="K (default: classifier rows or max label + 1)"),
    weighted_mean: bool = typer.Option(False, "--weighted-mean", help="global mean of all features instead of the mean of class means"),
    empty: Empty = typer.Option(Empty.raise_, "--empty", help="a class without samples: raise, or drop it and report"),
) -> None:
    """Compute every neural-collapse metric of a feature file (table; JSON keyed by the REFERENCE.md names).

    JSON values are null where a metric is not computable (W-metrics and nc4 without a classifier)."""
    from nclab.io import load_feature_file, write_json_atomic
    from nclab.metrics import EmptyClassesError, compute_metrics

    if json_out is not None and json_out.is_dir():  # before the work, not after it
        fail(f"--json {json_out} is a folder; give a file name, e.g. --json {json_out / 'metrics.json'}")
    try:
        data = load_feature_file(features, labels, classifier, bias)
        X, y = data["features"], data["labels"]
        passes = 2 if data["classifier"] is not None else 1
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True) as progress:
            task = progress.add_task("NC statistics", total=passes * X.shape[0])
            res = compute_metrics(
                X, y, data["classifier"], data["bias"], num_classes=num_classes, weighted_mean=weighted_mean,
                batch_size=batch_size, empty=empty.value, progress=lambda rows: progress.advance(task, rows),
            )
    except EmptyClassesError as err:
        fail(err.message(num_classes="--num-classes K", head="a classifier", drop="--empty drop"))
    except ValueError as err:
        fail(str(err))
    values = res.as_dict()
    title = f"{features.name}: N={res.num_samples:,}, d={res.dim}, K={res.num_classes}, rank Sigma_B={res.sigma_b_rank}"
    if res.empty_classes:
        title += f", dropped empty classes {list(res.empty_classes)}"
    console.print(metrics_table(values, title))
    if json_out is not None:
        write_json_atomic(json_out, values)
        console.print(f"wrote {json_out}")


def demo_command(
    out: Path = typer.Option(Path("results/demo"), "--out", help="folder for tables (JSON) and figures (PNG)"),
    quick: bool = typer.Option(False, "--quick", help="smaller settings (for tests)"),
) -> None:
    """The main job on embedded defaults: the four UFMs vs their closed forms, then the metrics demo.

    Writes tables (JSON) and figures (PNG) under --out."""
    from nclab.cli.demo_metrics import run_metrics_demo

    try:
        from nclab.cli.demo_ufm import run_ufm_demo
    except ImportError:  # the UFM package is optional at this stage
        run_ufm_demo = None
    if run_ufm_demo is not None and not quick:
        console.rule("unconstrained feature models")
        run_ufm_demo(out / "ufm")
    console.rule("planted simplex ETF: every NC metric")
    overrides = dict(n=50, sigmas=(1e-3, 1e-1)) if quick else {}
    run_metrics_demo(out / "metrics", console=console, **overrides)


def bench_command(
    n: int = typer.Option(100_000, "--n", min=2, help="N, samples (rows of the synthetic features)"),
    d: int = typer.Option(2048, "--d", min=1, help="d, feature dimension"),
    k: int = typer.Option(1000, "--k", min=2, help="K, number of classes"),
    batch: int = typer.Option(10_000, "--batch", min=1, help="rows per batch of the streamed statistics"),
    repeats: int = typer.Option(3, "--repeats", min=1, help="timed repetitions (the median is reported)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the timings as JSON here"),
) -> None:
    """Run the metrics benchmark (nclab.benchmarks.metrics: ratios to the float32 GEMM floor
    and to a float64 two-pass), in a child process so that its thread settings stay its own."""
    cmd = [sys.executable, "-m", "nclab.benchmarks.metrics", "--n", str(n), "--d", str(d), "--k", str(k),
           "--batch", str(batch), "--repeats", str(repeats)] + (["--json", str(json_out)] if json_out else [])
    raise typer.Exit(subprocess.call(cmd))


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics_command)
    app.command("demo")(demo_command)
    app.command("bench")(bench_command)
