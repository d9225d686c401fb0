"""Reproduce the heads comparison: learned vs fixed simplex-ETF (d default and d = K) vs normalized.

Claims checked (REFERENCE.md section 4): a fixed simplex-ETF classifier with d = K trains as well
as a learned one while training K*d fewer parameters (Zhu et al. 2021; with a CIFAR-style ResNet18
and K = 10 the d = K network has 8,859,862 parameters instead of 11,173,962), and normalized
features and classifiers reach collapse faster (Yaras et al. 2022).

Two scales:

* default (CPU, minutes): an MLP (3 x 512, batch norm) on a balanced MNIST subset of 400 training
  and 500 test images per class for 40 epochs (:data:`CPU_DEFAULTS`), enough to reach the terminal
  phase (100% training accuracy, nc1 still falling);
* ``full=True``: the papers' scale (:data:`FULL_DEFAULTS`): CIFAR-style ResNet18, the full training
  set, 200 epochs, metrics on a log-spaced schedule, on the GPU.

Every run is an ordinary ``nclab train`` run in ``out/<name>`` executed in a fresh process, so that
the peak resident memory reported on CPU (``getrusage``) is that run's own; a run already finished
is not repeated and an interrupted one is resumed.  The comparison is written as ``out/heads.json``
(per run: the final log record, parameter counts, memory, time), ``out/heads.md`` (a markdown
table), ``out/heads.png`` (:func:`nclab.nets.plot.plot_runs`) and returned.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nclab.nets.train import SUMMARY, TrainConfig, train

__all__ = ["HEAD_RUNS", "CPU_DEFAULTS", "FULL_DEFAULTS", "heads_configs", "reproduce_heads", "TABLE_COLUMNS"]


@dataclass(frozen=True)
class HeadRun:
    name: str
    head: str
    d_equals_K: bool = False


#: The four runs of the comparison.
HEAD_RUNS = (
    HeadRun("learned", "learned"),
    HeadRun("etf", "etf"),
    HeadRun("etf_d=K", "etf", d_equals_K=True),
    HeadRun("normalized", "normalized"),
)

#: CPU default: minutes on 2 cores.
CPU_DEFAULTS = dict(model="mlp", per_class=400, test_per_class=500, epochs=40, batch_size=128, lr=0.05,
                    device="cpu", eval_schedule="every")
#: The papers' scale (Papyan et al. 2020; Zhu et al. 2021): ResNet18, all data, 200 epochs, GPU.
FULL_DEFAULTS = dict(model="resnet18", per_class=None, test_per_class=None, epochs=200, batch_size=128, lr=0.05, device="auto",
                     eval_schedule="log", eval_points=40)

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
        cfg = TrainConfig(dataset=dataset, head=run.head, out=str(Path(out) / run.name), resume=True, **base)
        if run.d_equals_K:
            cfg.feature_dim = K
        configs.append(cfg.validate())
    return configs


def _train_in_child(config: TrainConfig, progress: bool) -> dict:
    return train(config, progress=progress)


def _run_fresh_process(config: TrainConfig, progress: bool) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_train_in_child, config, progress).result()


def _row(name: str, summary: dict) -> dict:
    final = summary.get("final", {})
    row = {"run": name, "head": summary["config"]["head"], "d": summary["feature_dim"]}
    for key in ("train_acc", "test_acc", "train_loss", "test_loss", "nc1", "nc1_trace_ratio", "cdnv",
                "nc2_equinorm_means", "nc2_equinorm_W", "nc2_maxangle_means", "nc2_maxangle_W",
                "nc2_etf_means", "nc2_etf_W", "nc3", "nc3_duality_gram", "nc4", "bias_collapse"):
        row[key] = final.get(key)
    for key in ("parameters_total", "parameters_trainable", "train_state_mb", "peak_memory_mb", "memory_kind",
                "total_seconds", "epochs_done", "device"):
        row[key] = summary.get(key)
    return row


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for h, _, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k), f) for _, k, f in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def rich_table(rows: list[dict], title: str = ""):
    from rich.table import Table

    table = Table(title=title)
    for header, _, _ in TABLE_COLUMNS:
        table.add_column(header, justify="left" if header == "run" else "right")
    for r in rows:
        table.add_row(*(_fmt(r.get(k), f) for _, k, f in TABLE_COLUMNS))
    return table


def reproduce_heads(
    dataset: str = "mnist",
    full: bool = False,
    out="results/heads",
    *,
    progress: bool = True,
    fresh_process: bool = True,
    console=None,
    **overrides,
) -> dict:
    """Run (or resume) the four runs of :data:`HEAD_RUNS` and write the comparison.

    ``overrides`` go to :func:`heads_configs` (epochs, per_class, device, data_dir, seed, ...).
    ``fresh_process=False`` trains in this process (faster to start; peak RSS then accumulates
    over the runs).  Returns ``{"rows": [...], "seconds": wall time, "files": {...}}``.
    """
    from rich.console import Console

    from nclab.nets.plot import plot_runs

    console = console or Console()
    out = Path(out)
    configs = heads_configs(dataset, full, out, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    for run, cfg in zip(HEAD_RUNS, configs):
        done = Path(cfg.out) / SUMMARY
        summary = json.loads(done.read_text()) if done.is_file() else None
        if summary is None or not summary.get("finished"):
            console.print(f"[bold]{run.name}[/]: {cfg.model}, head {cfg.head}, d = {cfg.feature_dim or 'default'}, "
                          f"{cfg.epochs} epochs -> {cfg.out}")
            summary = (_run_fresh_process if fresh_process else train)(cfg, progress)
        rows.append(_row(run.name, summary))
    seconds = time.perf_counter() - t0
    scale = "full (papers' scale)" if full else "CPU default"
    c0 = configs[0]
    title = (f"Heads on {dataset}: {c0.model}, {c0.per_class or 'all'} per class, {c0.epochs} epochs, "
             f"lr {c0.lr}, wd {c0.weight_decay}, batch {c0.batch_size} [{scale}]")
    files = {"json": out / "heads.json", "markdown": out / "heads.md", "figure": out / "heads.png"}
    result = {"title": title, "dataset": dataset, "full": full, "seconds": seconds, "rows": rows,
              "configs": [c.to_dict() for c in configs]}
    files["json"].write_text(json.dumps(result, indent=2) + "\n")
    files["markdown"].write_text(f"## {title}\n\n{markdown_table(rows)}\nTotal wall time of this call: {seconds:.0f} s\n")
    plot_runs([c.out for c in configs], files["figure"], labels=[r.name for r in HEAD_RUNS], title=title)
    console.print(rich_table(rows, title))
    result["files"] = {k: str(v) for k, v in files.items()}
    return result
