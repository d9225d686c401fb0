"""The files of a run directory, written by rank 0 of ``nclab train`` and read by plots and resumes.

This module owns the directory's layout and formats (all writes that replace a file go through
:func:`nclab.io.atomic_write`: temporary file, fsync, ``os.replace``):

* ``config.json``   the :class:`nclab.nets.config.TrainConfig` plus the derived number of classes
                    and milestones (JSON, 0666 less the umask, as every :func:`nclab.io.write_json_atomic`);
* ``log.jsonl``     one JSON object per epoch (:data:`LOG_KEYS`, plus the metric names of
                    :data:`nclab.metrics.METRIC_NAMES` on evaluated epochs; non-finite numbers
                    are written as null), appended line by line;
* ``checkpoint.pt`` model, optimizer, scheduler, RNG states (torch, CUDA, numpy, python), epoch,
                    format version, replaced atomically after every epoch (:meth:`RunDir.save_checkpoint`).
                    Only tensors and plain Python values (dict, list, int, float, str, None), so it
                    is read with ``torch.load(..., weights_only=True)``, which never runs pickled code;
* ``checkpoint.json`` its seal: format version, epoch, size and SHA-256 of checkpoint.pt's bytes
                    (and those of the checkpoint it replaces);
* ``summary.json``  written at the end: final record, parameter counts, time, peak memory.

Checkpoints (format :data:`CHECKPOINT_FORMAT`).  Each save writes the seal first, then replaces
checkpoint.pt; the seal names the new checkpoint and the one on disk before it, so a crash between
the two writes leaves a verifiable pair (the previous checkpoint with the previous epoch).  Before
anything is loaded, :meth:`RunDir.resume_state` checks the whole folder and refuses, with a
ValueError naming the file and what to do, and without changing any file: a missing folder or one
without a run, a log with epochs but no checkpoint, a checkpoint without its seal, an empty,
truncated or altered checkpoint (size or SHA-256 differ from the seal), an unknown format version,
a file that ``weights_only`` loading refuses (pickled code), and a log whose epochs disagree with
the checkpoint's (the log may hold one epoch more: a crash between the log line and the
checkpoint; that line is dropped).  Checkpoints written before format 1 (no seal, pickled numpy and
Python RNG states) are refused: they cannot be loaded without running pickled code.

>>> from nclab.nets.rundir import RunDir                                    # doctest: +SKIP
>>> RunDir("runs/etf").read_log()[-1]["nc1"]                              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nclab.io import atomic_write, json_ready, write_json_atomic
from nclab.nets.distributed import unwrap

__all__ = ["RunDir", "ResumeState", "read_log", "LOG_KEYS", "CHECKPOINT", "SEAL", "LOG", "CONFIG", "SUMMARY",
           "CHECKPOINT_FORMAT"]

CHECKPOINT = "checkpoint.pt"
SEAL = "checkpoint.json"
#: Version of checkpoint.pt's content and of checkpoint.json; other versions are refused.
CHECKPOINT_FORMAT = 1
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


def read_log(run_dir: str | Path, on_bad_line: Callable[[str], None] | None = None) -> list[dict]:
    """The epoch records of ``run_dir/log.jsonl``, in file order: the one reader of the log.

    An unfinished last line (no newline after it: an append was interrupted) is ignored.  Any
    other line that is not a JSON object with an integer ``epoch`` raises ValueError naming the
    file and the line -- or, with ``on_bad_line`` (figures of a damaged run), is skipped after
    ``on_bad_line(message)``.  FileNotFoundError (saying what was expected) when there is no log."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}; is {run_dir} a directory written by `nclab train`?")
    lines = path.read_text(errors="replace").split("\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            if i == len(lines):  # no newline after it: the append was interrupted
                continue
            problem = f"not valid JSON ({getattr(err, 'msg', err)} at column {getattr(err, 'colno', '?')})"
        else:
            if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                records.append(record)
                continue
            problem = "not an epoch record (no integer 'epoch')"
        if on_bad_line is None:
            raise ValueError(f"{path} line {i}: {problem}; restore the log from a copy of the run, or start a "
                             "new run in another folder")
        on_bad_line(f"{path} line {i}: {problem}; line skipped")
    return records


def _rng_state() -> dict:
    """The RNG states as tensors and plain values (weights-only loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ResumeState:
    """What :meth:`RunDir.resume_state` verified: ``epoch`` (epochs done, 0 when no epoch finished),
    ``state`` (the checkpoint's content, None when there is none), ``log`` (the records up to
    ``epoch``) and ``config`` (config.json)."""

    def __init__(self, epoch: int, state: dict | None, log: list[dict], config: dict, sha256: str | None):
        self.epoch, self.state, self.log, self.config, self.sha256 = epoch, state, log, config, sha256


class RunDir:
    """The run directory ``path`` (see the module docstring for its files)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._sealed: str | None = None  # SHA-256 of the checkpoint on disk, once written or verified

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- state of the directory ---------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def has_log(self) -> bool:
        return (self.path / LOG).is_file()

    def holds_run(self) -> bool:
        """A run was started here (a checkpoint, its seal or a log exists)."""
        return self.has_checkpoint() or self.has_log() or (self.path / SEAL).is_file()

    # -- config.json, summary.json ----------------------------------------------------------

    def start(self, config: dict) -> None:
        """Begin a fresh run: create the folder, an empty log, and config.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / LOG).write_text("")
        write_json_atomic(self.path / CONFIG, config)

    def read_config(self) -> dict:
        """config.json ({} if there is none; ValueError naming the file if it is not JSON)."""
        path = self.path / CONFIG
        if not path.is_file():
            return {}
        try:
            config = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not readable JSON ({err}); restore it from a copy of the run") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} does not hold a training configuration; restore it from a copy of the run")
        return config

    def write_config(self, config: dict) -> None:
        """Replace config.json (a resumption that extends the run records its new length)."""
        write_json_atomic(self.path / CONFIG, config)

    def saved_config(self) -> dict:
        """config.json of the run to resume here; ValueError (what to do instead) when the folder
        does not exist, holds no run or has no config.json."""
        if not self.path.is_dir():
            raise ValueError(f"cannot resume {self.path}: the folder does not exist; check the path, or "
                             "start a new run there without --resume")
        if not self.holds_run():
            raise ValueError(f"cannot resume {self.path}: the folder holds no training run (no {LOG}, no "
                             f"{CHECKPOINT}); check the path, or start a new run there without --resume")
        config = self.read_config()
        if not config:
            raise ValueError(f"cannot resume {self.path}: {CONFIG} is missing; restore it from a copy of the "
                             "run, or start a new run in another folder")
        return config

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
        log line and the checkpoint leaves a record of an epoch that a resumption repeats.  The
        file is rewritten only when something is dropped."""
        if not self.has_log():
            atomic_write(self.path / LOG, b"")
            return
        records = read_log(self.path)
        keep = [r for r in records if r["epoch"] <= last_epoch]
        text = (self.path / LOG).read_bytes()
        new = "".join(_dumps(r) + "\n" for r in keep).encode()
        if len(keep) != len(records) or not text.endswith(b"\n") and text.strip():
            atomic_write(self.path / LOG, new)

    # -- checkpoint.pt ---------------------------------------------------------------------

    def save_checkpoint(self, net, optimizer, scheduler, epoch: int, total_seconds: float, config: dict) -> None:
        """Replace the checkpoint by the state after ``epoch`` epochs (RNG states included): the
        seal (checkpoint.json) first, then checkpoint.pt, each atomically."""
        sched = dict(scheduler.state_dict())
        if "milestones" in sched:  # a Counter; the milestones are the config's (lr_milestones in config.json)
            sched["milestones"] = sorted(sched["milestones"].elements())
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": unwrap(net).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": sched,
            "rng": _rng_state(),
            "total_seconds": float(total_seconds),
            "config": json.loads(_dumps(config)),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        sha = _sha256(data)
        previous = None
        if self._sealed is not None:  # the checkpoint on disk, as the current seal describes it
            old = self._read_seal()
            for entry in (old, old.get("previous")):
                if isinstance(entry, dict) and entry.get("sha256") == self._sealed:
                    previous = {k: entry[k] for k in ("epoch", "bytes", "sha256")}
        seal = {"format": CHECKPOINT_FORMAT, "file": CHECKPOINT, "epoch": epoch, "bytes": len(data), "sha256": sha,
                "previous": previous}
        write_json_atomic(self.path / SEAL, seal)
        atomic_write(self.path / CHECKPOINT, data)
        self._sealed = sha

    def _read_seal(self) -> dict:
        path = self.path / SEAL
        try:
            seal = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot resume {self.path}: {path} is not readable ({type(err).__name__}); "
                             f"{CHECKPOINT} cannot be verified without it: restore both from a copy of the run, "
                             "or start a new run in another folder") from None
        self._check_format(seal, path)
        return seal

    def _check_format(self, obj, path) -> None:
        """Refuse a seal or checkpoint of another format version (one message for both)."""
        if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
            version = obj.get("format") if isinstance(obj, dict) else None
            raise ValueError(f"cannot resume {self.path}: {path} has format version {version!r}, this nclab "
                             f"reads version {CHECKPOINT_FORMAT}; resume with the nclab that wrote the run")

    def resume_state(self, *, need_config: bool = True) -> ResumeState:
        """Verify the run folder and read the checkpoint (weights only), changing no file.

        Returns the :class:`ResumeState`; ValueError (one sentence naming the file and what to do)
        on any inconsistency listed in the module docstring.  A run whose first epoch never
        finished (an empty log, no checkpoint) has epoch 0 and no state.  ``need_config=False``
        verifies a checkpoint saved without config.json (a folder of checkpoints only)."""
        if need_config or not self.has_checkpoint():
            config = self.saved_config()
        else:
            config = self.read_config()
        ck = self.path / CHECKPOINT
        log = read_log(self.path) if self.has_log() else []
        epochs = [r["epoch"] for r in log]
        if not ck.is_file():
            if epochs:
                raise ValueError(f"cannot resume {self.path}: {LOG} records {len(epochs)} epochs but {ck} is "
                                 "missing; restore the checkpoint from a copy of the run (resuming would "
                                 "restart from scratch and lose that history), or start a new run in another folder")
            return ResumeState(0, None, [], config, None)
        if not (self.path / SEAL).is_file():
            raise ValueError(f"cannot resume {self.path}: {ck} has no seal {SEAL} (a checkpoint of an nclab "
                             "before checkpoint format 1, or the seal was deleted), so it cannot be verified "
                             "or loaded safely; restore the seal, or start a new run in another folder")
        seal = self._read_seal()
        data = ck.read_bytes()
        sha = _sha256(data)
        candidates = [seal] + ([seal["previous"]] if isinstance(seal.get("previous"), dict) else [])
        match = next((c for c in candidates if c.get("sha256") == sha and c.get("bytes") == len(data)), None)
        if match is None:
            if not data:
                problem = "is empty"
            elif len(data) < seal.get("bytes", 0):
                problem = f"is truncated ({len(data)} of {seal['bytes']} bytes)"
            else:
                problem = f"is corrupt (its SHA-256 differs from the one in {SEAL})"
            raise ValueError(f"cannot resume {self.path}: {ck} {problem}; restore it from a copy of the run, "
                             "or start a new run in another folder")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"cannot resume {self.path}: {ck} matches its seal but cannot be loaded as "
                             f"weights only ({type(err).__name__}: it may carry pickled code, which is never "
                             "run); start a new run in another folder") from None
        self._check_format(state, ck)
        epoch = int(state["epoch"])
        if epoch != match.get("epoch"):
            raise ValueError(f"cannot resume {self.path}: {ck} holds epoch {epoch} but {SEAL} says "
                             f"{match.get('epoch')}; restore both from a copy of the run")
        if self.has_log() and epochs not in (list(range(1, epoch + 1)), list(range(1, epoch + 2))):
            shown = f"epochs {epochs[0]}..{epochs[-1]}" if epochs else "no epoch"
            raise ValueError(f"cannot resume {self.path}: {LOG} records {shown} ({len(epochs)} lines) but {ck} "
                             f"holds epoch {epoch}; restore the matching log and checkpoint from a copy of the "
                             "run, or start a new run in another folder")
        return ResumeState(epoch, state, log[:epoch], config, sha)

    def restore(self, resumed: ResumeState, net, optimizer, scheduler) -> tuple[int, float]:
        """Load a verified checkpoint (:meth:`resume_state`) into model, optimizer, scheduler and
        the RNGs; the scheduler keeps its own milestones.  Returns ``(epochs done, total_seconds)``."""
        state = resumed.state
        unwrap(net).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        if "milestones" in sched:
            sched["milestones"] = scheduler.state_dict()["milestones"]
        scheduler.load_state_dict(sched)
        _set_rng_state(state["rng"])
        self._sealed = resumed.sha256
        return int(state["epoch"]), float(state["total_seconds"])

    def load_checkpoint(self, net, optimizer, scheduler) -> tuple[int, float]:
        """Verify (:meth:`resume_state`) and restore the checkpoint; returns ``(epochs done,
        total_seconds)``.  ValueError if there is none or it does not verify."""
        resumed = self.resume_state(need_config=False)
        if resumed.state is None:
            raise ValueError(f"cannot resume {self.path}: there is no {CHECKPOINT}")
        return self.restore(resumed, net, optimizer, scheduler)
