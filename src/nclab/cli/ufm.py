"""`nclab ufm ...` commands (filled in by the UFM work)."""

import typer


def register(app: typer.Typer) -> None:
    pass
