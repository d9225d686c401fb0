"""The vocabulary of `nclab reproduce`: a claim of a paper, the evidence measured for it, a verdict.

A *target* (one paper: ``zhu2021``, ``yaras2022``, ``gushen2024``, ``lu2022``) is a module of this
package with a module-level :class:`Target` called ``TARGET`` whose ``run(ctx)`` returns a list of
:class:`Claim`.  Each claim quotes the paper (paraphrased, with its theorem or section), states the
criterion that decides it, and carries the evidence: numbers (``evidence``, JSON-ready), tables and
figures (PNG files written under ``ctx.out``, named relative to it).  The verdict is one of
:data:`VERDICTS`; a claim that could not be checked here is ``"not run"`` with the reason ("no GPU").
A failing claim is reported as failed, never hidden.

:func:`check` runs one experiment and turns its outcome (or the exception it raised) into a claim,
so one broken experiment never hides the others.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "VERDICTS",
    "SCALES",
    "Figure",
    "Table",
    "Claim",
    "Evidence",
    "Context",
    "Target",
    "check",
    "headline",
]

#: The verdicts a claim can get.
VERDICTS = ("passed", "failed", "not run")
#: tiny: the test suite (seconds per target); quick: `make demo` (all targets under 10 minutes on
#: 2 cores); full: the papers' scales where this machine allows.
SCALES = ("tiny", "quick", "full")


@dataclass
class Figure:
    """A PNG written by the target; ``path`` is relative to the target's folder ``ctx.out``."""

    path: str
    caption: str


@dataclass
class Table:
    """A small table for the report: ``rows`` are lists of JSON-ready cells, one per column."""

    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Evidence:
    """What an experiment returns to :func:`check`.

    ``passed``: True / False, or None when the claim was not run (then ``reason`` says why).
    ``numbers``: the measured values the criterion reads (JSON-ready: floats, ints, str, lists, dicts).
    ``summary``: one or two sentences stating the measurement, with its key numbers.
    ``headline``: optional, the key number for the verdict table in a few characters
    ("max gap 3e-12"); without it the report shows the first number of ``numbers``."""

    passed: bool | None
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    reason: str = ""
    headline: str = ""


@dataclass
class Claim:
    """One claim of one paper, checked: the statement, the criterion, the evidence and the verdict."""

    key: str  # "zhu2021.global_minimisers": <target>.<claim>
    title: str  # a short heading
    source: str  # "Zhu et al. 2021, Theorem 3.1"
    statement: str  # the claim, paraphrased
    criterion: str  # what was measured and what counts as passed
    verdict: str  # one of VERDICTS
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    reason: str = ""  # why failed or not run
    seconds: float = 0.0
    headline: str = ""  # the key number of the verdict table (optional; see Evidence.headline)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Claim":
        data = dict(data)
        data["tables"] = [Table(**t) for t in data.get("tables", [])]
        data["figures"] = [Figure(**f) for f in data.get("figures", [])]
        return cls(**data)


@dataclass
class Context:
    """What a target's ``run`` gets.

    ``out``: the target's own folder (created by the runner); figures and JSON go there.
    ``scale``: one of :data:`SCALES`.  ``seed``: the base seed (targets derive the others from it and
    state them).  ``device``: "cpu" or "cuda".  ``data_dir``: where MNIST / Fashion-MNIST / CIFAR-10
    live (None: ../shared/data resolution of :mod:`nclab.nets.data`).  ``overrides``: test hooks
    (e.g. ``{"max_iter": 2}`` caps every solver, to show that a broken run turns a claim to failed);
    targets read them with :meth:`option`.  ``progress``: called with a line of text as work goes on."""

    out: Path
    scale: str = "quick"
    seed: int = 0
    device: str = "cpu"
    data_dir: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        self.out = Path(self.out)

    def option(self, name: str, default: Any = None) -> Any:
        return self.overrides.get(name, default)

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def pick(self, tiny: Any, quick: Any, full: Any) -> Any:
        """The value for this context's scale."""
        return {"tiny": tiny, "quick": quick, "full": full}[self.scale]


@dataclass(frozen=True)
class Target:
    """One paper: ``name`` (CLI name), ``title`` (the paper), ``citation`` (authors, year, venue),
    ``run(ctx) -> list[Claim]``."""

    name: str
    title: str
    citation: str
    run: Callable[[Context], list[Claim]]


def check(
    ctx: Context,
    key: str,
    *,
    title: str,
    source: str,
    statement: str,
    criterion: str,
    experiment: Callable[[], Evidence],
) -> Claim:
    """Run ``experiment`` and return the checked :class:`Claim`.

    The verdict is "passed" / "failed" from ``Evidence.passed`` (None: "not run", with the reason).
    An exception inside the experiment makes the claim "failed" with the error as its reason (and
    the traceback's last lines in ``evidence["traceback"]``): a crash is evidence too."""
    ctx.say(f"{key}: {title}")
    start = time.perf_counter()
    try:
        ev = experiment()
    except Exception as exc:  # noqa: BLE001 - reported in the claim, not swallowed
        return Claim(
            key=key, title=title, source=source, statement=statement, criterion=criterion,
            verdict="failed", summary=f"the experiment raised {type(exc).__name__}: {exc}",
            evidence={"traceback": traceback.format_exc(limit=6)[-3000:]},
            reason=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start,
        )
    verdict = "not run" if ev.passed is None else ("passed" if ev.passed else "failed")
    return Claim(
        key=key, title=title, source=source, statement=statement, criterion=criterion,
        verdict=verdict, summary=ev.summary, evidence=ev.numbers, tables=ev.tables,
        figures=ev.figures, reason=ev.reason, seconds=time.perf_counter() - start, headline=ev.headline,
    )


def headline(template: str, numbers: dict[str, Any]) -> str:
    """``template.format(**numbers)`` for the verdict table's key number, or "" when an entry is
    missing or does not fit the format (a headline never turns a claim into a crash)."""
    try:
        return template.format(**numbers)
    except (KeyError, IndexError, TypeError, ValueError):
        return ""
