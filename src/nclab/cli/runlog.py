"""Reading a training run's files for figures, tolerant of damage: a run interrupted while it
wrote, or a file edited by hand, still plots.

* :func:`read_run_log` -- the records of ``log.jsonl`` through :func:`nclab.nets.rundir.read_log`
  (which resuming uses strictly); a bad line is skipped with a warning naming the file and line;
* :func:`read_run_config` -- ``config.json`` as a dict, or None with a warning naming the file
  when it is unreadable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from nclab.nets.rundir import CONFIG, read_log

__all__ = ["read_run_log", "read_run_config"]


def _default_warn(message: str) -> None:
    from nclab.cli.console import warn

    warn(message)


def read_run_log(run_dir, on_skip: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`nclab.nets.rundir.read_log` for figures: each bad line is skipped with
    ``on_skip(message)`` (default a CLI warning naming the file and the line)."""
    return read_log(run_dir, on_bad_line=on_skip or _default_warn)


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
