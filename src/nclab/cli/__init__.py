"""The `nclab` command line: a thin typer layer over nclab's functions.

Each sub-module registers its own commands, so the command groups stay independent:
  metrics  `nclab metrics`, `nclab demo`, `nclab bench`
  ufm      `nclab ufm solve` (and the UFM part of the demo)
  landscape  `nclab landscape classify`, `nclab landscape survey`
  nets     `nclab train`, `nclab plot` (and the command of `nclab reproduce heads`)
  reproduce  `nclab reproduce {zhu2021,yaras2022,gushen2024,lu2022,all,heads}`
  sweep    `nclab sweep CONFIG.yaml`, `nclab sweep plot DIR`
"""

from __future__ import annotations

import typer

from nclab.cli.console import guard_commands

app = typer.Typer(
    name="nclab",
    help="Neural collapse: UFM solvers, landscape checks, exact NC metrics, ETF-head training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        import nclab

        try:
            number = version("nclab")
        except PackageNotFoundError:  # running from a source tree that is not installed
            number = nclab.__version__
        typer.echo(f"nclab {number}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Neural collapse: UFM solvers, landscape checks, exact NC metrics, ETF-head training."""


def _register() -> None:
    from nclab.cli import metrics as metrics_cli
    from nclab.cli import nets as nets_cli
    from nclab.cli import landscape as landscape_cli
    from nclab.cli import reproduce as reproduce_cli
    from nclab.cli import ufm as ufm_cli
    from nclab.cli import sweep as sweep_cli

    metrics_cli.register(app)
    ufm_cli.register(app)
    landscape_cli.register(app)
    nets_cli.register(app)
    reproduce_cli.register(app)
    sweep_cli.register(app)
    guard_commands(app)  # one error boundary: bad values and files end as one `error:` line, exit 2


_register()


def main() -> None:
    app()
