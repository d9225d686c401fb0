"""Reproduce the heads comparison: learned vs fixed simplex-ETF (d default and d = K) vs normalized.

Claims checked (REFERENCE.md section 4): a fixed simplex-ETF classifier with d = K trains as well
as a learned one while training K*d fewer parameters (Zhu et al. 2021; with a CIFAR-style ResNet18
and K = 10 the d = K network has 8,859,862 parameters instead of 11,173,962), and normalized
features and classifiers reach collapse faster (Yaras et al. 2022).

Two scales:

* default (CPU, minutes): an MLP (3 x 512, batch norm) on a balanced MNIST subset of 1,000
  training images per class and the whole test set for 100 epochs (:data:`CPU_DEFAULTS`), enough to
  reach the terminal phase (100% training accuracy, nc1 still falling);
* ``full=True``: the papers' scale (:data:`FULL_DEFAULTS`): CIFAR-style ResNet18, the full training
  set, 200 epochs, metrics on a log-spaced schedule, on the GPU.

Every run is an ordinary ``nclab train`` run in ``out/<name>`` executed in a fresh process, so that
the peak resident memory reported on CPU (``getrusage``) is that run's own; on the CPU one run per
core goes at a time, each with one torch thread.  A run already finished is not repeated and an
interrupted one is resumed.  The comparison is written as ``out/heads.json``
(per run: the final log record, parameter counts, memory, time) and ``out/heads.md`` (a markdown
table), and returned with the run folders and their labels.  Nothing here prints or plots:
messages go to an ``on_message`` callback and training progress to :func:`nclab.nets.train.train`'s
callbacks; the command line shows them (and the table) with rich and draws ``out/heads.png``
(:func:`nclab.cli.plots.plot_runs`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nclab.io import write_json_atomic
from nclab.metrics import METRIC_NAMES
from nclab.nets.config import TrainConfig
from nclab.nets.rundir import SUMMARY
from nclab.nets.train import train

__all__ = [
    "HeadRun",
    "HEAD_RUNS",
    "CPU_DEFAULTS",
    "FULL_DEFAULTS",
    "TABLE_COLUMNS",
    "heads_configs",
    "default_jobs",
    "reproduce_heads",
    "markdown_table",
    "format_cell",
]


@dataclass(frozen=True)
class HeadRun:
    name: str
    head: str
    d_equals_K: bool = False
    etf_rotation: bool = False


#: The four runs of the comparison.  The d = 512 ETF is rotated by the seed so that it spans all
#: 512 feature dimensions: the frame on the first K axes (Zhu et al.'s) would leave 502 of them
#: without gradient and make the run the d = K run plus dead units.  The d = K ETF keeps Zhu et
#: al.'s unrotated frame (see :attr:`nclab.nets.train.TrainConfig.etf_rotation`).
HEAD_RUNS = (
    HeadRun("learned", "learned"),
    HeadRun("etf", "etf", etf_rotation=True),
    HeadRun("etf_d=K", "etf", d_equals_K=True),
    HeadRun("normalized", "normalized"),
)

#: CPU default: minutes on 2 cores.
CPU_DEFAULTS = dict(model="mlp", per_class=1000, test_per_class=None, epochs=100, batch_size=128, lr=0.05,
                    device="cpu", eval_schedule="every")
#: The papers' scale (Papyan et al. 2020; Zhu et al. 2021): ResNet18, all data, 200 epochs, GPU.
FULL_DEFAULTS = dict(model="resnet18", per_class=None, test_per_class=None, epochs=200, batch_size=128, lr=0.05,
                     device="auto", eval_schedule="log", eval_points=40)

#: (header, key in the row, format) of the printed and markdown tables.
TABLE_COLUMNS = (
    ("run", "run", "{}"),
    ("d", "d", "{}"),
    ("train acc", "train_acc", "{:.4f}"),
    ("test acc", "test_acc", "{:.4f}"),
    ("train loss", "train_loss", "{:.2e}"),
    ("nc1", "nc1", "{:.2e}"),
    ("equinorm μ", "nc2_equinorm_means", "{:.2e}"),
    ("max-angle μ", "nc2_maxangle_means", "{:.2e}"),
    ("nc3", "nc3", "{:.2e}"),
    ("nc4", "nc4", "{:.2e}"),
    ("params", "parameters_total", "{:,}"),
    ("trainable", "parameters_trainable", "{:,}"),
    ("train state MiB", "train_state_mb", "{:.2f}"),
    ("peak MiB", "peak_memory_mb", "{:.0f}"),
    ("time s", "total_seconds", "{:.0f}"),
)


def heads_configs(dataset: str = "mnist", full: bool = False, out="results/heads", **overrides) -> list[TrainConfig]:
    """The :class:`TrainConfig` of each run of the comparison (``overrides`` replace defaults,
    e.g. ``epochs``, ``per_class``, ``device``, ``data_dir``, ``seed``)."""
    from nclab.nets.data import num_classes

    base = dict(FULL_DEFAULTS if full else CPU_DEFAULTS)
    base.update({k: v for k, v in overrides.items() if v is not None})
    K = num_classes(dataset)
    configs = []
    for run in HEAD_RUNS:
        cfg = TrainConfig(dataset=dataset, head=run.head, out=str(Path(out) / run.name), resume=True,
                          etf_rotation=run.etf_rotation, **base)
        if run.d_equals_K:
            cfg.feature_dim = K
        configs.append(cfg.validate())
    return configs


def _row(name: str, summary: dict) -> dict:
    final = summary.get("final", {})
    row = {"run": name, "head": summary["config"]["head"], "d": summary["feature_dim"]}
    for key in ("train_acc", "test_acc", "train_loss", "test_loss", "ncc_acc", *METRIC_NAMES):
        row[key] = final.get(key)
    for key in ("parameters_total", "parameters_trainable", "train_state_mb", "peak_memory_mb", "memory_kind",
                "total_seconds", "epochs_done", "device"):
        row[key] = summary.get(key)
    return row


def format_cell(value, fmt: str) -> str:
    """One cell of the comparison table: ``fmt`` of :data:`TABLE_COLUMNS` applied to ``value``
    ("–" for a missing value, the plain value when the format does not apply)."""
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _g(value, digits: int) -> str:
    """``digits`` significant digits of a float ("–" for None)."""
    return "–" if value is None else format(value, f".{digits}g") if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for h, _, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    body = ["| " + " | ".join(format_cell(r.get(k), f) for _, k, f in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def default_jobs(configs: list[TrainConfig]) -> int:
    """Runs at a time: one per CPU core (at most one per run) on the CPU, one on a GPU."""
    if any(c.device != "cpu" for c in configs):
        return 1
    return max(1, min(len(configs), os.cpu_count() or 1))


def reproduce_heads(
    dataset: str = "mnist",
    full: bool = False,
    out="results/heads",
    *,
    fresh_process: bool = True,
    jobs: int | None = None,
    on_message: Callable[[str], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[dict], None] | None = None,
    **overrides,
) -> dict:
    """Run (or resume) the four runs of :data:`HEAD_RUNS` and write the comparison.

    ``overrides`` go to :func:`heads_configs` (epochs, per_class, device, data_dir, seed, ...).
    Each run trains in a fresh process (peak RSS is its own); on the CPU ``jobs`` of them at a
    time (default :func:`default_jobs`: one per core) with ``cpu_count // jobs`` torch threads each,
    since one thread per process is far faster than two threads fighting over the cores.
    ``fresh_process=False`` trains here, one run after the other (faster to start; peak RSS then
    accumulates over the runs).

    ``on_message(text)`` receives one line per event (the plan of each run, a run finished, a
    warning); ``on_epoch`` and ``on_batch`` go to :func:`nclab.nets.train.train` when one run
    trains at a time (progress of parallel runs would interleave); in fresh processes they must be
    picklable.  Returns ``{"title", "rows": [...], "seconds": wall time, "files": {...}, "runs": [run
    folders], "labels": [run names], ...}``.
    """

    say = on_message or (lambda text: None)
    out = Path(out)
    configs = heads_configs(dataset, full, out, **overrides)
    if full and configs[0].device == "auto":
        import torch

        if not torch.cuda.is_available():
            say("warning: --full is the papers' scale (ResNet18, 60,000 images, 200 epochs) "
                "and no GPU is available: on a CPU this takes days")
    jobs = jobs or default_jobs(configs)
    if fresh_process and all(c.device == "cpu" for c in configs):
        for c in configs:
            c.threads = c.threads or max(1, (os.cpu_count() or 1) // jobs)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summaries = {}
    todo = []
    for run, cfg in zip(HEAD_RUNS, configs):
        done = Path(cfg.out) / SUMMARY
        summary = json.loads(done.read_text()) if done.is_file() else None
        if summary is not None and summary.get("finished"):
            summaries[run.name] = summary
        else:
            todo.append((run, cfg))
    for run, cfg in todo:
        say(f"{run.name}: {cfg.model}, head {cfg.head}, d = {cfg.feature_dim or 'default'}, "
            f"{cfg.epochs} epochs -> {cfg.out}")
    if fresh_process and todo:
        # progress of parallel runs would overwrite each other
        callbacks = dict(on_epoch=on_epoch, on_batch=on_batch) if jobs == 1 else {}
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {pool.submit(train, cfg, **callbacks): run for run, cfg in todo}
            for fut in as_completed(futures):
                run = futures[fut]
                summaries[run.name] = s = fut.result()
                say(f"{run.name} done: train acc {_g(s['final'].get('train_acc'), 4)}, "
                    f"nc1 {_g(s['final'].get('nc1'), 3)}, {s['total_seconds']:.0f} s")
    else:
        for run, cfg in todo:
            summaries[run.name] = train(cfg, on_epoch=on_epoch, on_batch=on_batch)
    rows = [_row(run.name, summaries[run.name]) for run in HEAD_RUNS]
    seconds = time.perf_counter() - t0
    scale = "full (papers' scale)" if full else "CPU default"
    c0 = configs[0]
    title = (f"Heads on {dataset}: {c0.model}, {c0.per_class or 'all'} per class, {c0.epochs} epochs, "
             f"lr {c0.lr}, wd {c0.weight_decay}, batch {c0.batch_size} [{scale}]")
    files = {"json": out / "heads.json", "markdown": out / "heads.md"}
    result = {"title": title, "dataset": dataset, "full": full, "seconds": seconds, "jobs": jobs, "rows": rows,
              "configs": [c.to_dict() for c in configs], "runs": [str(c.out) for c in configs],
              "labels": [r.name for r in HEAD_RUNS]}
    write_json_atomic(files["json"], result)
    files["markdown"].write_text(
        f"## {title}\n\n{markdown_table(rows)}\nWall time of this call: {seconds:.0f} s ({jobs} run(s) at a time); "
        "time s = one run's training and evaluation time; peak MiB = "
        f"{rows[0]['memory_kind']} of the run's process.\n"
    )
    result["files"] = {k: str(v) for k, v in files.items()}
    return result
