"""`nclab train`, `nclab plot`, `nclab reproduce heads`: a thin layer over nclab.nets.

(The ``reproduce`` group itself, with ``heads`` in it, is built by :mod:`nclab.cli.reproduce`.)

Bad options and missing data end with a one-line message and exit code 2, never a traceback.
The presentation of training lives here: the rich progress bar (:class:`TrainProgress`, fed by
:func:`nclab.nets.train.train`'s callbacks) and the rich table of the heads comparison.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from nclab.cli.console import err_console, fail

from nclab.nets.config import TrainConfig
from nclab.nets.train import train

#: The defaults of the options are TrainConfig's, so Python and the command line cannot drift apart.
_D = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def short_record(record: dict) -> str:
    """One line of an epoch's log record: running loss, and accuracies and nc1 when evaluated."""
    parts = [f"loss {record['train_loss_running']:.4f}"]
    for key, fmt in (("train_acc", "train {:.4f}"), ("test_acc", "test {:.4f}"), ("nc1", "nc1 {:.3e}")):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    return "  ".join(parts)


class TrainProgress:
    """A rich progress bar of one epoch's batches, plus a line per evaluated epoch, drawn from
    :func:`nclab.nets.train.train`'s ``on_batch`` and ``on_epoch`` callbacks (pass the bound
    methods).  The bar starts with the first batch and closes after the last epoch of the call
    (or with :meth:`close`), so one object serves several runs one after the other; it holds no
    rich object until then and can be pickled to a fresh training process."""

    def __init__(self, console=None) -> None:
        self.console = console  # a rich Console (None: rich's default, the terminal)
        self._bar = None
        self._task = None
        self._until = None

    def __reduce__(self):  # a copy in another process starts without a bar of its own, on its terminal
        return (type(self), ())

    def on_batch(self, info: dict) -> None:
        if self._bar is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            # fits 80 columns: "ep 12/100 ━━━━━━━━━━━━━━━━ 469/469 0:00:12 0:00:05 loss 0.1234"
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=16),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(compact=True),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task("epoch", total=1, info="")
        self._until = info["until"]
        if info["batch"] == 1:
            self._bar.reset(self._task, total=info["batches"], description=f"ep {info['epoch']}/{info['epochs']}")
        self._bar.advance(self._task)

    def on_epoch(self, record: dict) -> None:
        if self._bar is None:
            return
        self._bar.update(self._task, info=f"loss {record['train_loss_running']:.4f}")
        if "nc1" in record:
            self._bar.console.print(f"epoch {record['epoch']:4d}  {short_record(record)}")
        if record["epoch"] == self._until:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = self._task = self._until = None

    def callbacks(self) -> dict:
        """``on_epoch`` and ``on_batch`` for :func:`nclab.nets.train.train`."""
        return {"on_epoch": self.on_epoch, "on_batch": self.on_batch}


def fmt_number(value, digits: int = 4) -> str:
    """A number for a summary line: ``digits`` significant digits (``0.9727``, ``1.234e-05``);
    an int as is; None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def summary_line(summary: dict, out) -> str:
    """The last line of ``nclab train``: epochs, time, final accuracies and nc1, the run folder."""
    final = summary["final"]
    return (f"{summary['epochs_done']} epochs in {summary['total_seconds']:.1f} s: "
            f"train acc {fmt_number(final.get('train_acc'))}, test acc {fmt_number(final.get('test_acc'))}, "
            f"nc1 {fmt_number(final.get('nc1'), 3)} -> {out}")


def _count(value) -> str:
    """A parameter count in a few characters: 8,859,862 -> 8.86M, 5,130 -> 5.13k."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–" if value is None else str(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return str(int(value))


#: (header, key, format) of the heads table on a narrow terminal (80 columns): accuracies,
#: the collapse metrics that separate the heads, trainable parameters, memory and time.  The
#: complete table (:data:`nclab.nets.reproduce.TABLE_COLUMNS`) goes to heads.md and heads.json.
COMPACT_COLUMNS = (
    ("run", "run", "{}"),
    ("d", "d", "{}"),
    ("train", "train_acc", "{:.4f}"),
    ("test", "test_acc", "{:.4f}"),
    ("nc1", "nc1", "{:.1e}"),
    ("nc3", "nc3", "{:.1e}"),
    ("nc4", "nc4", "{:.1e}"),
    ("trained", "parameters_trainable", _count),
    ("MiB", "peak_memory_mb", "{:.0f}"),
    ("s", "total_seconds", "{:.0f}"),
)


def heads_table(rows: list[dict], title: str = "", width: int | None = None):
    """The rich table of :func:`nclab.nets.reproduce.reproduce_heads`' rows: every column of
    :data:`nclab.nets.reproduce.TABLE_COLUMNS` when it fits ``width`` (None: no limit), else
    :data:`COMPACT_COLUMNS`, which fit 80 columns without cutting a number."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from nclab.nets.reproduce import TABLE_COLUMNS, format_cell

    def build(columns, **style):
        table = Table(title=title, **style)
        for header, _, _ in columns:
            table.add_column(header, justify="left" if header == "run" else "right", no_wrap=True)
        for r in rows:
            table.add_row(*(f(r.get(k)) if callable(f) else format_cell(r.get(k), f) for _, k, f in columns))
        return table

    full = build(TABLE_COLUMNS)
    if width is None or Console(width=10_000).measure(full).maximum <= width:
        return full
    return build(COMPACT_COLUMNS, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False,
                 collapse_padding=True,
                 caption="train/test: accuracy; trained: trainable parameters; MiB: peak memory; "
                         "s: seconds (every column in heads.md)")


def train_command(
    ctx: typer.Context,
    run_dir: Annotated[Optional[Path], typer.Argument(help="run directory, the same as --out (nclab train --resume DIR continues the run in DIR with its config.json)", show_default=False)] = None,
    dataset: Annotated[str, typer.Option(help="mnist, fashion-mnist or cifar10")] = _D["dataset"],
    model: Annotated[str, typer.Option(help="resnet18 (CIFAR-style) or mlp")] = _D["model"],
    head: Annotated[str, typer.Option(help="learned, etf (fixed simplex ETF) or normalized")] = _D["head"],
    feature_dim: Annotated[Optional[int], typer.Option("--feature-dim", "-d", help="penultimate dimension d (default: the backbone's, 512; etf needs d >= K. With etf, the d - (K-1) feature directions outside the frame's span get no gradient from the loss but still count in nc1 and nc3: use d = K to measure collapse of the fixed-ETF design)")] = None,
    tau: Annotated[float, typer.Option(help="temperature of the normalized head")] = _D["tau"],
    bias: Annotated[Optional[bool], typer.Option("--bias/--no-bias", help="head bias (default: learned yes, etf no)")] = None,
    per_class: Annotated[Optional[int], typer.Option(help="balanced training subset: images per class (default all)")] = None,
    test_per_class: Annotated[Optional[int], typer.Option(help="balanced test subset: images per class (default all)")] = None,
    epochs: Annotated[int, typer.Option(help="epochs; lr / 10 at 1/3 and 2/3 of them. With --resume, more epochs than the run's extend it (also a finished one); the learning rate of the epochs already trained never changes")] = _D["epochs"],
    milestones: Annotated[Optional[str], typer.Option(help="epochs after which lr / 10, comma-separated, e.g. 66,133 (default: 1/3 and 2/3 of --epochs)", show_default=False)] = None,
    lr: Annotated[float, typer.Option(help="initial learning rate (SGD)")] = _D["lr"],
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = _D["momentum"],
    weight_decay: Annotated[float, typer.Option(help="weight decay")] = _D["weight_decay"],
    batch_size: Annotated[int, typer.Option(help="global batch size (split over torchrun's processes)")] = _D["batch_size"],
    eval_batch_size: Annotated[int, typer.Option(help="batch size of the metric passes")] = _D["eval_batch_size"],
    eval_schedule: Annotated[str, typer.Option(help="'every' epoch or 'log' (log-spaced epochs)")] = _D["eval_schedule"],
    eval_points: Annotated[int, typer.Option(help="number of log-spaced evaluations with --eval-schedule log")] = _D["eval_points"],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = _D["device"],
    seed: Annotated[int, typer.Option(help="seed of the initialisation, the subset and the data order")] = _D["seed"],
    data_dir: Annotated[Path, typer.Option(help="folder holding MNIST/raw, FashionMNIST70k, cifar-10-batches-py")] = Path(_D["data_dir"]),
    download: Annotated[bool, typer.Option("--download", help="fetch missing data sets (needs internet)")] = False,
    out: Annotated[Path, typer.Option(help="run directory (config.json, log.jsonl, checkpoint.pt)")] = Path(_D["out"]),
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out (or DIR) from its verified checkpoint, with the options of its config.json; options given again must agree with them (--epochs may extend the run; --device, --threads, --data-dir, --stop-after may differ)")] = False,
    stop_after: Annotated[Optional[int], typer.Option(help="stop (checkpointed) after this epoch; continue later with --resume")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads of this process (default: torch's)")] = None,
    etf_rotation: Annotated[bool, typer.Option("--etf-rotation", help="rotate the fixed ETF by the seed (default: the frame on the first K axes, as Zhu et al.)")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train a network with a learned, fixed simplex-ETF or normalized head, tracking neural
    collapse on the training set after every epoch (log.jsonl in --out).

    Several processes: torchrun --nproc-per-node 2 -m nclab train ... (gloo on CPU, nccl on GPU).
    """
    from nclab.nets.config import restored_config
    from nclab.nets.rundir import RunDir

    # the options typed (or set in the environment), as opposed to defaults (click's ParameterSource)
    given = {name for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
    if run_dir is not None:
        if "out" in given and Path(out) != Path(run_dir):
            fail(f"two run directories: {run_dir} and --out {out}; give one")
        out, given = run_dir, given | {"out"}
    try:
        milestone_list = None if milestones is None else [int(m) for m in milestones.replace(" ", "").split(",") if m]
    except ValueError:
        fail(f"milestones must be comma-separated epochs such as 66,133, got {milestones!r}")
    values = dict(
        dataset=dataset, model=model, head=head, feature_dim=feature_dim, tau=tau, bias=bias,
        per_class=per_class, test_per_class=test_per_class, epochs=epochs, lr=lr, momentum=momentum,
        weight_decay=weight_decay, batch_size=batch_size, eval_batch_size=eval_batch_size,
        eval_schedule=eval_schedule, eval_points=eval_points, device=device, seed=seed,
        data_dir=str(data_dir), download=download, out=str(out), resume=resume, stop_after=stop_after,
        threads=threads, etf_rotation=etf_rotation, milestones=milestone_list,
    )
    try:
        if resume:  # the run's own options, then those given again (train checks that they agree)
            saved = RunDir(out).saved_config()
            config = restored_config(saved, {k: v for k, v in values.items() if k in given and k != "out"}, out)
        else:
            config = TrainConfig(**values)
    except ValueError as err:
        fail(str(err))
    bar = TrainProgress()
    try:
        summary = train(config, **(bar.callbacks() if progress else {}))
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    finally:
        bar.close()
    if os.environ.get("RANK", "0") == "0":
        typer.echo(summary_line(summary, out))


def plot_command(
    runs: Annotated[list[Path], typer.Argument(help="run directories written by `nclab train`")],
    out: Annotated[Path, typer.Option(help="image file (.png, .pdf, .svg)")] = Path("collapse.png"),
    title: Annotated[Optional[str], typer.Option(help="figure title")] = None,
) -> None:
    """Papyan-style panels (accuracy, loss, nc1, equinorm, max-angle, nc3, nc4, CDNV) against the
    epoch, one colour per run."""
    from nclab.cli.plots import plot_runs
    from nclab.cli.runlog import read_run_config

    for run in runs:  # a damaged config.json only costs the legend its label: say which file
        if run.is_dir():
            read_run_config(run)
    try:
        path = plot_runs(runs, out, title=title)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    typer.echo(f"wrote {path}")


def reproduce_heads_command(
    dataset: Annotated[str, typer.Option(help="mnist or fashion-mnist")] = "mnist",
    full: Annotated[bool, typer.Option("--full", help="the papers' scale: ResNet18, all data, 200 epochs, GPU")] = False,
    out: Annotated[Path, typer.Option(help="output folder (one run directory per head, heads.{json,md,png})")] = Path("results/heads"),
    epochs: Annotated[Optional[int], typer.Option(help="override the number of epochs")] = None,
    per_class: Annotated[Optional[int], typer.Option(help="override the images per class")] = None,
    device: Annotated[Optional[str], typer.Option(help="override the device (auto, cpu, cuda)")] = None,
    data_dir: Annotated[Path, typer.Option(help="folder holding MNIST/raw and FashionMNIST70k")] = Path("../shared/data"),
    seed: Annotated[int, typer.Option(help="seed of every run")] = 0,
    jobs: Annotated[Optional[int], typer.Option(help="runs at a time (default: one per CPU core on the CPU, 1 on a GPU)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Compare heads on one data set: learned, fixed ETF, fixed ETF with d = K, normalized.

    Default: an MLP on 1,000 MNIST images per class for 100 epochs on the CPU, one run per
    core at a time (minutes on 2 cores).
    Writes a table (final accuracies, metrics, parameters, memory, time) as JSON and markdown, and
    the collapse figure.  Re-running resumes unfinished runs and skips finished ones.
    """
    from rich.console import Console

    from nclab.nets.reproduce import reproduce_heads

    console = Console()
    if not console.is_terminal:  # a log file: wide enough for the table
        console = Console(width=220)
    bar = TrainProgress()
    try:
        result = reproduce_heads(dataset, full, out, epochs=epochs, per_class=per_class, device=device,
                                 data_dir=str(data_dir), seed=seed, jobs=jobs,
                                 on_message=lambda text: console.print(text, markup=False, highlight=False),
                                 **(bar.callbacks() if progress else {}))
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    finally:
        bar.close()
    from nclab.cli.plots import plot_runs

    result["files"]["figure"] = str(plot_runs(result["runs"], out / "heads.png", labels=result["labels"],
                                              title=result["title"]))
    console.print(heads_table(result["rows"], result["title"], width=console.width))
    typer.echo(f"{result['seconds']:.0f} s; wrote " + ", ".join(result["files"].values()))


def resumable(command):
    """``nclab train`` with Ctrl-C ending in one line that says how to go on (exit status 130,
    the shell's for an interrupt) instead of a traceback: the run folder keeps the checkpoint of
    the last finished epoch, and ``--resume`` continues from it."""
    import functools

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            out = Path(kwargs.get("out") or _D["out"])
            err_console.print(f"interrupted{_last_epoch(out)}; resume with: nclab train --out {out} --resume",
                              markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=130) from None

    return run


def _last_epoch(out: Path) -> str:
    """" after epoch N" of the run in ``out`` (its log's last record), or "" when unknown."""
    from nclab.cli.runlog import read_run_log

    try:
        records = read_run_log(out, on_skip=lambda message: None)
    except OSError:
        return ""
    return f" after epoch {records[-1]['epoch']}" if records else ""


def register(app: typer.Typer) -> None:
    app.command("train")(resumable(train_command))
    app.command("plot")(plot_command)
    # `nclab reproduce heads` (reproduce_heads_command) is registered by nclab.cli.reproduce, which owns the group
