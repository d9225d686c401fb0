"""The command line's consoles and its one way to report a problem.

* :func:`fail` -- bad input: one line ``error: ...`` on stderr, exit status 2, never a traceback;
* :func:`warn` -- a result that is not what was asked for (a run that did not converge): one line
  ``warning: ...`` on stderr; the command decides its exit status;
* :func:`error_boundary` -- wraps a command so that the expected failures (bad values:
  ``ValueError``, JSON that does not parse included; files: ``OSError`` such as a folder where a
  file was expected, a missing file, no permission) end as :func:`fail`'s one line, and anything
  else (a bug) keeps its traceback.  :func:`guard_commands` applies it to every command of an app.

Messages are printed as plain text: square brackets in them (``[0, 1]``, ``[classifier]``) are
shown, not taken as rich markup.
"""

from __future__ import annotations

import functools
import json
from typing import Callable, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["console", "err_console", "fail", "warn", "describe_error", "error_boundary", "guard_commands"]

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Print a one-line error (no traceback) and exit with status 2."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def describe_error(err: BaseException) -> str:
    """One line for an expected failure: an OSError names its file and the reason ("out.json:
    is a directory"), a JSON error says where the text stopped parsing, a ValueError is its
    message (already written for a user)."""
    if isinstance(err, OSError) and err.filename is not None:
        reason = (err.strerror or type(err).__name__).lower()
        where = str(err.filename) + (f" -> {err.filename2}" if err.filename2 is not None else "")
        return f"{where}: {reason}"
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())  # one line


def error_boundary(fn: Callable) -> Callable:
    """``fn`` with its expected failures (ValueError, OSError) turned into :func:`fail`'s one line
    and exit status 2; other exceptions (bugs) and typer's own exits pass through."""

    @functools.wraps(fn)
    def command(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError) as err:
            fail(describe_error(err))

    return command


def guard_commands(app: typer.Typer) -> typer.Typer:
    """Wrap every command of ``app`` and of its sub-apps in :func:`error_boundary` (once)."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_nclab_guarded", False):
            info.callback = error_boundary(info.callback)
            info.callback._nclab_guarded = True
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_commands(group.typer_instance)
    return app
