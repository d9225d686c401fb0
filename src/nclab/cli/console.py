"""The command line's consoles and its one way to report a problem.

* :func:`fail` -- bad input: one line ``error: ...`` on stderr, exit status 2, never a traceback;
* :func:`warn` -- a result that is not what was asked for (a run that did not converge): one line
  ``warning: ...`` on stderr; the command decides its exit status.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

__all__ = ["console", "err_console", "fail", "warn"]

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Print a one-line error (no traceback) and exit with status 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
