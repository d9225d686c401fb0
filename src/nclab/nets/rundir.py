"""The files of a run directory, written by rank 0 of ``nclab train`` and read by plots and resumes.

This module owns the directory's layout and formats (all writes that replace a file go through
:func:`nclab.io.atomic_write`: temporary file, fsync, ``os.replace``):

* ``config.json``   the :class:`nclab.nets.config.TrainConfig` plus the derived number of classes
                    and milestones (JSON, 0666 less the umask, as every :func:`nclab.io.write_json_atomic`);
* ``log.jsonl``     one JSON object per epoch (:data:`LOG_KEYS`, plus the metric names of
                    :data:`nclab.metrics.METRIC_NAMES` on evaluated epochs; non-finite numbers
                    are written as null), appended line by line;
* ``checkpoint.pt`` model, optimizer, scheduler, RNG states (torch, CUDA, numpy, python), epoch,
                    replaced atomically after every epoch (:meth:`RunDir.save_checkpoint`);
* ``summary.json``  written at the end: final record, parameter counts, time, peak memory.

>>> from nclab.nets.rundir import RunDir                                    # doctest: +SKIP
>>> RunDir("runs/etf").read_log()[-1]["nc1"]                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from nclab.io import atomic_write, json_ready, write_json_atomic
from nclab.nets.distributed import unwrap

__all__ = ["RunDir", "read_log", "LOG_KEYS", "CHECKPOINT", "LOG", "CONFIG", "SUMMARY"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"

#: Keys of every evaluated epoch's record in log.jsonl, besides the metric names.
LOG_KEYS = (
    "epoch",
    "lr",
    "train_loss_running",  # mean minibatch loss during the epoch (train mode)
    "train_loss",  # eval mode, whole training set
    "train_acc",
    "test_loss",
    "test_acc",
    "ncc_acc",  # accuracy of the nearest-class-mean rule on the training set
    "epoch_seconds",
    "eval_seconds",
    "total_seconds",
    "peak_memory_mb",
    "memory_kind",
)


def _dumps(record: dict) -> str:
    """One strict-JSON log line (non-finite numbers become null)."""
    return json.dumps(json_ready(record), allow_nan=False)


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/log.jsonl``, in epoch order.  FileNotFoundError (saying what was
    expected) when there is none."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}; is {run_dir} a directory written by `nclab train`?")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class RunDir:
    """The run directory ``path`` (see the module docstring for its files)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- state of the directory ---------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def has_log(self) -> bool:
        return (self.path / LOG).is_file()

    def holds_run(self) -> bool:
        """A run was started here (a checkpoint or a log exists)."""
        return self.has_checkpoint() or self.has_log()

    # -- config.json, summary.json ----------------------------------------------------------

    def start(self, config: dict) -> None:
        """Begin a fresh run: create the folder, an empty log, and config.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / LOG).write_text("")
        write_json_atomic(self.path / CONFIG, config)

    def read_config(self) -> dict:
        """config.json ({} if there is none)."""
        path = self.path / CONFIG
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.path / SUMMARY, summary)

    # -- log.jsonl ------------------------------------------------------------------------------

    def read_log(self) -> list[dict]:
        """The records of the log (FileNotFoundError if there is none)."""
        return read_log(self.path)

    def append_log(self, record: dict) -> None:
        """Append one epoch's record as a strict-JSON line."""
        with open(self.path / LOG, "a") as f:
            f.write(_dumps(record) + "\n")

    def trim_log(self, last_epoch: int) -> None:
        """Keep the records up to ``last_epoch`` (the checkpoint's): a crash between writing the
        log line and the checkpoint leaves a record of an epoch that a resumption repeats."""
        keep = [r for r in self.read_log() if r["epoch"] <= last_epoch] if self.has_log() else []
        atomic_write(self.path / LOG, "".join(_dumps(r) + "\n" for r in keep).encode())

    # -- checkpoint.pt ---------------------------------------------------------------------

    def save_checkpoint(self, net, optimizer, scheduler, epoch: int, total_seconds: float, config: dict) -> None:
        """Replace the checkpoint by the state after ``epoch`` epochs (RNG states included)."""
        state = {
            "epoch": epoch,
            "model": unwrap(net).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "total_seconds": total_seconds,
            "config": config,
        }
        atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f))

    def load_checkpoint(self, net, optimizer, scheduler) -> tuple[int, float]:
        """Restore model, optimizer, scheduler and the RNG states from the checkpoint; returns
        ``(epochs done, total_seconds)``."""
        # on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the device
        state = torch.load(self.path / CHECKPOINT, map_location="cpu", weights_only=False)
        unwrap(net).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        return int(state["epoch"]), float(state["total_seconds"])
