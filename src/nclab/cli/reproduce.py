"""`nclab reproduce`: check the papers' claims and write a report; `nclab reproduce heads`.

One subcommand per paper (:data:`nclab.reproduce.runner.TARGET_NAMES`) and ``all``; each runs
:func:`nclab.reproduce.runner.reproduce`, shows a line per step, prints the verdict table (80
columns) and the path of report.html.  Exit status: 0 when every claim passed or was not run with
its reason, 1 when a claim failed, 2 on bad input.  ``heads`` (the comparison of classifier heads)
lives in :mod:`nclab.cli.nets`; this module owns the group.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from nclab.cli.console import console, fail
from nclab.reproduce.runner import TARGET_NAMES

__all__ = ["register", "verdict_table", "HELP"]

#: One line per paper for --help (the targets' titles and citations live in their modules).
HELP = {
    "zhu2021": "Zhu et al. 2021: CE UFM minimisers, phase transition, benign landscape, fixed ETF classifier.",
    "yaras2022": "Yaras et al. 2022: normalized UFM minimisers and saddles, faster collapse with normalized features.",
    "gushen2024": "Gu & Shen 2024: d = K for CE and MSE, global solutions and strict saddles.",
    "lu2022": "Lu & Steinerberger 2022: points on the sphere, simplex ETF for n <= d+1, uniform for large n.",
    "all": "every paper, one after the other, in one report.",
}

_EXIT = ("Exit status 0 when every claim passed or was not run (with its reason), 1 when a claim "
         "failed, 2 on bad input.")
_STYLE = {"passed": "bold green", "failed": "bold red", "not run": "yellow"}


def verdict_table(result: dict):
    """The rich table of the verdicts (target, claim, verdict, key number); wraps to the console's
    width (the command prints it at 80 columns at most)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from nclab.reproduce.report import verdict_rows

    counts = result["counts"]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="verdicts",
                  caption=f"{counts['passed']} passed, {counts['failed']} failed, {counts['not run']} not run")
    table.add_column("target", no_wrap=True)
    table.add_column("claim", ratio=3, overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("key number", ratio=2, overflow="fold")
    for r in verdict_rows(result):
        table.add_row(r["target"], Text(r["claim"]), Text(r["verdict"], style=_STYLE.get(r["verdict"], "")),
                      Text(r["key_number"]))
    return table


def _overrides(values: list[str] | None) -> dict:
    out = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--set needs KEY=VALUE (e.g. --set max_iter=2), got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        import torch

        if not torch.cuda.is_available():
            fail(f"--device {device}: no CUDA GPU is visible here; use --device cpu or auto")
        return device
    if device != "cpu":
        fail(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def _make_command(name: str):
    def command(
        out: Annotated[Path, typer.Option(help="output folder: one folder per paper, report.md, report.html, results.json")] = Path("results/reproduce"),
        quick: Annotated[bool, typer.Option("--quick", help="small scale, every claim covered (the default; all papers in minutes on 2 cores)")] = False,
        full: Annotated[bool, typer.Option("--full", help="the papers' scales where this machine allows (ResNet18 runs need a GPU)")] = False,
        tiny: Annotated[bool, typer.Option("--tiny", hidden=True, help="seconds per paper (the test suite)")] = False,
        seed: Annotated[int, typer.Option(min=0, help="base seed; every paper derives its seeds from it and states them")] = 0,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
        data_dir: Annotated[Optional[Path], typer.Option(help="folder holding MNIST, Fashion-MNIST, CIFAR-10 (default: ../shared/data)")] = None,
        overrides: Annotated[Optional[list[str]], typer.Option("--set", hidden=True, help="KEY=VALUE test hook, e.g. max_iter=2")] = None,
        progress: Annotated[bool, typer.Option(help="show a line per step")] = True,
    ) -> None:
        from rich.console import Console
        from rich.markup import escape

        from nclab.reproduce.runner import reproduce

        if quick + full + tiny > 1:
            fail("give one of --quick, --full (and --tiny)")
        scale = "full" if full else "tiny" if tiny else "quick"
        dev = _device(device)
        extra = _overrides(overrides)
        command_line = " ".join(
            ["nclab", "reproduce", name, "--out", shlex.quote(str(out)), f"--{scale}", "--seed", str(seed),
             "--device", dev]
            + (["--data-dir", shlex.quote(str(data_dir))] if data_dir is not None else [])
            + [f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in extra.items()])
        start = time.perf_counter()

        def say(line: str) -> None:
            if progress:
                console.print(f"[dim]{time.perf_counter() - start:7.1f}s[/] {escape(line)}", highlight=False,
                              soft_wrap=True)

        result = reproduce(name, out, scale=scale, seed=seed, device=dev, data_dir=data_dir, overrides=extra,
                           progress=say, command=command_line)
        narrow = Console(width=min(console.width, 80), force_terminal=console.is_terminal, highlight=False)
        narrow.print(verdict_table(result))
        typer.echo(f"{result['seconds']:.0f} s; report: {result['report']['html']}")
        if not result["ok"]:
            raise typer.Exit(code=1)

    command.__name__ = f"reproduce_{name}"
    command.__doc__ = (f"{HELP[name]}\n\nRuns the experiments behind the claims, writes JSON, PNG figures and "
                       f"a report (report.md, self-contained report.html) in --out. {_EXIT}")
    return command


def register(app: typer.Typer) -> None:
    """Add the ``reproduce`` group: one command per paper, ``all`` and ``heads``."""
    from nclab.cli.nets import reproduce_heads_command

    group = typer.Typer(help=f"Reproduce the papers' claims and write a report. {_EXIT}", no_args_is_help=True)
    for name in (*TARGET_NAMES, "all"):
        group.command(name)(_make_command(name))
    group.command("heads")(reproduce_heads_command)
    app.add_typer(group, name="reproduce")
