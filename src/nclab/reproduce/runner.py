"""Run the paper targets, keep every verdict, record where each number comes from, write the report.

:func:`reproduce` runs each named target (a module ``nclab.reproduce.<name>`` with a ``TARGET``,
see :mod:`nclab.reproduce.claims`) in its own folder ``out/<name>/``, writes the target's
``claims.json`` there (atomically), and finally ``out/report.md``, ``out/report.html`` and
``out/results.json`` (:mod:`nclab.reproduce.report`).  Nothing is hidden and nothing stops the run:

* a target whose module is not in this installation is reported as one claim "not run" with the
  reason (the module's name);
* a target whose ``run`` raises, or returns something that is not a list of claims, is reported as
  one claim "failed" with the error and the traceback's last lines;
* a claim whose experiment raised is already "failed" (:func:`nclab.reproduce.claims.check`).

The provenance (:func:`provenance`) names the command, the seed, the scale, nclab's version and git
commit, the versions of Python, torch, numpy and scipy, the machine (platform, CPU count, GPU) and
the date; each claim and each target carries its wall time.

Example
-------
>>> from nclab.reproduce.runner import reproduce
>>> result = reproduce(["lu2022"], "results/lu", scale="tiny")     # doctest: +SKIP
>>> result["counts"], result["report"]["html"]                      # doctest: +SKIP
({'passed': 3, 'failed': 0, 'not run': 0}, 'results/lu/report.html')
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

from nclab.io import write_json_atomic
from nclab.reproduce.claims import SCALES, VERDICTS, Claim, Context, Target

__all__ = [
    "TARGET_NAMES",
    "TargetMissing",
    "load_target",
    "resolve_names",
    "run_target",
    "reproduce",
    "provenance",
    "load_result",
]

#: The papers, in the order of the report.
TARGET_NAMES = ("zhu2021", "yaras2022", "gushen2024", "lu2022")


class TargetMissing(LookupError):
    """The module of a known target is not part of this installation."""


def resolve_names(names: str | Iterable[str]) -> list[str]:
    """``"all"`` (or a list holding it) -> every :data:`TARGET_NAMES`; else the names, checked and
    without repeats, in the order given."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for name in names:
        if name == "all":
            chosen = list(TARGET_NAMES)
        elif name in TARGET_NAMES:
            chosen = [name]
        else:
            raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGET_NAMES)} or all")
        out += [c for c in chosen if c not in out]
    if not out:
        raise ValueError(f"no target given; choose one of {', '.join(TARGET_NAMES)} or all")
    return out


def load_target(name: str) -> Target:
    """The ``TARGET`` of ``nclab.reproduce.<name>``.

    Raises :class:`TargetMissing` when that module does not exist (an import error *inside* the
    module, such as a missing dependency, propagates: that is a crash, not an absence), and
    ValueError for a name outside :data:`TARGET_NAMES` or a module without a ``Target``."""
    if name not in TARGET_NAMES:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGET_NAMES)}")
    module_name = f"nclab.reproduce.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise TargetMissing(f"module {module_name} is not part of this installation of nclab") from None
        raise
    target = getattr(module, "TARGET", None)
    if not isinstance(target, Target):
        raise ValueError(f"{module_name} has no TARGET (a nclab.reproduce.claims.Target)")
    return target


def _placeholder(name: str, verdict: str, reason: str, summary: str, headline: str,
                 evidence: dict | None = None, seconds: float = 0.0) -> Claim:
    """The one claim standing for a target that did not run (missing) or crashed."""
    return Claim(
        key=f"{name}.target", title=f"every claim of {name}", source=name,
        statement=f"the claims of {name}", criterion="the target runs and returns its claims",
        verdict=verdict, summary=summary, evidence=evidence or {}, reason=reason, seconds=seconds,
        headline=headline,
    )


def run_target(name: str, ctx: Context, loader: Callable[[str], Target] | None = None) -> dict:
    """Run one target in ``ctx.out`` (created) and write ``ctx.out/claims.json``.

    Returns ``{"name", "title", "citation", "status", "reason", "seconds", "folder", "claims"}``
    with ``status`` "ran", "missing" or "crashed" and ``claims`` a list of :class:`Claim`.
    ``loader`` (None: :func:`load_target`) maps the name to its :class:`Target`."""
    loader = loader or load_target
    ctx.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    title, citation, status, reason = name, "", "ran", ""
    try:
        target = loader(name)
        title, citation = target.title, target.citation
        claims = target.run(ctx)
        if not isinstance(claims, list) or not all(isinstance(c, Claim) for c in claims) or not claims:
            raise TypeError(f"{name}'s run returned {type(claims).__name__}, not a non-empty list of Claim")
    except TargetMissing as err:
        status, reason = "missing", str(err)
        claims = [_placeholder(name, "not run", reason, f"{name} was not run: {reason}", "module missing")]
    except Exception as err:  # noqa: BLE001 - a crash becomes a failed claim, the others go on
        status, reason = "crashed", f"{type(err).__name__}: {err}"
        claims = [_placeholder(name, "failed", reason, f"the target raised {reason}", f"crashed: {type(err).__name__}",
                               {"traceback": traceback.format_exc(limit=8)[-3000:]},
                               time.perf_counter() - start)]
    seconds = time.perf_counter() - start
    record = {"name": name, "title": title, "citation": citation, "status": status, "reason": reason,
              "seconds": seconds, "folder": name, "claims": claims}
    write_json_atomic(ctx.out / "claims.json", {**record, "scale": ctx.scale, "seed": ctx.seed,
                                                "claims": [c.to_dict() for c in claims]})
    return record


def _git_commit(root: Path) -> dict[str, Any]:
    """The commit of the source tree at ``root`` and whether it had uncommitted changes
    (None when it is not a git checkout or git is absent)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - a broken CUDA set-up is "none" here, the targets say more
        pass
    return "none"


def _version_of(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001
        return None


def provenance(command: str | None, scale: str, seed: int, device: str, data_dir) -> dict:
    """Where the numbers come from: command, seed, scale, device, data folder, nclab's version and
    git commit, Python / torch / numpy / scipy versions, platform, CPU count, GPU and start date."""
    import nclab

    src_root = Path(nclab.__file__).resolve().parents[2]
    return {
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "scale": scale,
        "seed": seed,
        "device": device,
        "data_dir": None if data_dir is None else str(data_dir),
        "nclab": nclab.__version__,
        "source": str(src_root),
        **{f"git_{k}": v for k, v in _git_commit(src_root).items()},
        "python": platform.python_version(),
        "torch": _version_of("torch"),
        "numpy": _version_of("numpy"),
        "scipy": _version_of("scipy"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": _gpu_name(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def reproduce(
    names: str | Iterable[str],
    out,
    scale: str = "quick",
    seed: int = 0,
    device: str = "cpu",
    data_dir=None,
    overrides: dict | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    command: str | None = None,
    loader: Callable[[str], Target] | None = None,
) -> dict:
    """Run the targets ``names`` (``"all"`` for every one) into ``out`` and write the report.

    Each target runs in ``out/<name>/`` with a :class:`Context` of ``scale`` (one of
    :data:`SCALES`), ``seed``, ``device``, ``data_dir`` and ``overrides`` (test hooks, e.g.
    ``{"max_iter": 2}``), and gets ``out/<name>/claims.json``.  ``progress(line)`` hears every step.
    ``command`` is the command line to record (the CLI passes its own); ``loader`` maps a name to
    its :class:`Target` (None: :func:`load_target`; tests replace it).

    Returns a JSON-ready dict (also written to ``out/results.json``): ``provenance``, ``targets``
    (one dict per target: name, title, citation, status "ran"/"missing"/"crashed", reason,
    seconds, folder, claims as dicts), ``counts`` (claims per verdict), ``ok`` (no claim failed),
    ``seconds`` and ``report`` (paths of report.md and report.html)."""
    from nclab.reproduce.report import write_report

    chosen = resolve_names(names)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: None)
    prov = provenance(command, scale, seed, device, data_dir)
    start = time.perf_counter()
    targets = []
    for i, name in enumerate(chosen, 1):
        say(f"[{i}/{len(chosen)}] {name} ({scale})")
        ctx = Context(out=out / name, scale=scale, seed=seed, device=device,
                      data_dir=None if data_dir is None else Path(data_dir),
                      overrides=dict(overrides or {}), progress=lambda line, n=name: say(f"  {n}: {line}"))
        record = run_target(name, ctx, loader)
        counts = {v: sum(c.verdict == v for c in record["claims"]) for v in VERDICTS}
        say(f"  {name}: {record['status']} in {record['seconds']:.1f} s: "
            + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
        targets.append({**record, "claims": [c.to_dict() for c in record["claims"]]})
    prov["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    all_claims = [c for t in targets for c in t["claims"]]
    result = {
        "provenance": prov,
        "targets": targets,
        "counts": {v: sum(c["verdict"] == v for c in all_claims) for v in VERDICTS},
        "ok": not any(c["verdict"] == "failed" for c in all_claims),
        "seconds": time.perf_counter() - start,
    }
    result["report"] = {k: str(v) for k, v in write_report(result, out).items()}
    write_json_atomic(out / "results.json", result)
    return result


def load_result(out) -> dict:
    """The ``results.json`` a previous :func:`reproduce` wrote in ``out`` (plain JSON, no code)."""
    import json

    return json.loads((Path(out) / "results.json").read_text())
