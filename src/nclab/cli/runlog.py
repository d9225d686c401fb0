"""Reading a training run's files for figures, tolerant of damage: a run interrupted while it
wrote, or a file edited by hand, still plots.

* :func:`read_run_log` -- the records of ``log.jsonl``; a line that is not a JSON object is
  skipped with a warning naming the file and the line (``nclab.nets.rundir.read_log``, which
  resuming relies on, refuses such a log instead);
* :func:`read_run_config` -- ``config.json`` as a dict, or None with a warning naming the file
  when it is unreadable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from nclab.nets.rundir import CONFIG, LOG

__all__ = ["read_run_log", "read_run_config"]


def _default_warn(message: str) -> None:
    from nclab.cli.console import warn

    warn(message)


def read_run_log(run_dir, on_skip: Callable[[str], None] | None = None) -> list[dict]:
    """The records of ``run_dir/log.jsonl`` in file order, skipping (with ``on_skip(message)``,
    default a CLI warning) each line that is not a JSON object.  FileNotFoundError naming the
    expected file when there is no log."""
    say = on_skip or _default_warn
    path = Path(run_dir) / LOG
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}; is {run_dir} a directory written by `nclab train`?")
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                say(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno}); line skipped")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                say(f"{path} line {number}: not an epoch record (no integer 'epoch'); line skipped")
                continue
            records.append(record)
    return records


def read_run_config(run_dir, on_error: Callable[[str], None] | None = None) -> dict | None:
    """``run_dir/config.json`` as a dict; None when there is none, and None with
    ``on_error(message)`` (default a CLI warning) naming the file when it is not a JSON object."""
    say = on_error or _default_warn
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        say(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})")
        return None
    if not isinstance(config, dict):
        say(f"{path}: not a JSON object")
        return None
    return config
