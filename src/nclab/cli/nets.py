"""`nclab train`, `nclab plot`, `nclab reproduce` (filled in by the deep-network work)."""

import typer


def register(app: typer.Typer) -> None:
    pass
