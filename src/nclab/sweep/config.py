"""A sweep's configuration: YAML (or a dict) -> a validated list of jobs, before any job starts.

The format (YAML; every key but ``kind`` optional)::

    kind: ufm solve            # or: landscape classify   (train: not yet)
    options:                   # fixed for every job
      loss: ce
      K: 4
      n: 5
    grid:                      # lists: every combination is a job (a cartesian product)
      lambda: [0.01, 0.05, 0.1, 0.2]
      d: [3, 4, 8]
    seeds: 3                   # 3 means seeds 0, 1, 2; or a list [0, 7, 11]; default [0]

The options of each kind are those of its command (:mod:`nclab.sweep.jobs`).  A key may not
appear both in ``options`` and in ``grid``.  Every value is cast to its option's type (a real
option accepts an integer, and text that reads as a number: YAML 1.1 reads ``1e-3`` as text) and
checked; then every distinct problem is built once (:func:`nclab.ufm.problems.make_problem`) and
the point specs are parsed, so a bad value, an option that does not apply to the loss, a
``lowdim:D`` with D >= d or an ``origin`` of a problem on spheres stops the sweep here, before a
job runs, with a ValueError that names the config key and what it allows::

    grid.K: K must be >= 2, got 1
    kind: must be one of 'ufm solve', 'landscape classify', got 'solve'

>>> cfg = parse_config({"kind": "ufm solve", "options": {"K": 3, "n": 2}, "grid": {"lambda": [0.01, 0.5]},
...                     "seeds": 2})
>>> len(cfg.jobs), cfg.jobs[0]
(4, {'kind': 'ufm solve', 'options': {'K': 3, 'n': 2, 'lambda': 0.01}, 'seed': 0})
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclab._validation import check_bool, check_choice, check_int, check_real, check_seed
from nclab.sweep.jobs import KINDS, OPTION_TYPES, PLANNED, job_key, kind_options, problem_options

__all__ = ["SweepConfig", "parse_config", "load_config", "TOP_KEYS"]

#: The keys a config may have at its top level.
TOP_KEYS = ("kind", "options", "grid", "seeds", "description")

#: Lower bounds of the integer options and the sign of the real ones (the problems check the
#: rest, see :func:`parse_config`).
_INT_MIN = {"K": 2, "n": 1, "d": 1, "n_points": 2, "max_iter": 1}
_POSITIVE = ("tau", "gtol")


@dataclass
class SweepConfig:
    """A validated sweep: ``kind``, the ``options`` and ``grid`` as given (values cast), the
    ``seeds``, the ``jobs`` (one dict per combination and seed, grid order, seeds innermost) and
    ``raw`` (the config as read, JSON-ready, kept beside the results)."""

    kind: str
    options: dict
    grid: dict
    seeds: list[int]
    jobs: list[dict] = field(repr=False)
    raw: dict = field(repr=False)
    description: str = ""

    @property
    def keys(self) -> list[str]:
        """The job keys, in job order (:func:`nclab.sweep.jobs.job_key`)."""
        return [job_key(j) for j in self.jobs]


def _cast(where: str, name: str, value: Any) -> Any:
    kind = OPTION_TYPES[name]
    try:
        if kind == "int":
            return check_int(name, value, minimum=_INT_MIN.get(name))
        if kind == "real":
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{name} must be a real number, got {value!r}") from None
            if name in _POSITIVE:
                return check_real(name, value, positive=True)
            return check_real(name, value, nonnegative=True)
        if kind == "bool":
            return check_bool(name, value)
        if kind == "ints":
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{name} must be a non-empty list of integers, got {value!r}")
            return [check_int(f"{name}[{i}]", v, minimum=1) for i, v in enumerate(value)]
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {value!r}")
        return value
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _check_text(where: str, name: str, value: str) -> None:
    from nclab.ufm.optim import SOLVERS
    from nclab.ufm.problems import LOSSES

    try:
        if name == "loss":
            check_choice("loss", value, LOSSES)
        elif name == "solver":
            check_choice("solver", value, tuple(SOLVERS))
        elif name == "point":
            from nclab.ufm.landscape.spec import parse_point_spec

            parse_point_spec(value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _mapping(where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a mapping of option: value, got {type(value).__name__}")
    return value


def _seeds(value: Any) -> list[int]:
    if value is None:
        return [0]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"seeds: a count of seeds must be >= 1 (seeds 0..N-1), got {value}")
        return list(range(int(value)))
    if isinstance(value, (list, tuple)) and value:
        try:
            seeds = [check_seed(s, f"seeds[{i}]") for i, s in enumerate(value)]
        except ValueError as err:
            raise ValueError(f"seeds: {err}") from None
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds: the list repeats a seed: {seeds}")
        return seeds
    raise ValueError(f"seeds: must be a count N >= 1 (seeds 0..N-1) or a non-empty list of seeds >= 0, got {value!r}")


def _culprit(message: str, options: dict, origin: dict) -> str:
    """The config key a problem's error message is about (its first word names the option, or
    "unknown option(s) X"), else every key of the job's problem options."""
    for k in options:
        if message.startswith((f"{k} ", f"{k}[")):
            return origin[k]
    m = re.search(r"unknown option\(s\) (\w+)", message)
    if m and m.group(1) in origin:
        return origin[m.group(1)]
    return ", ".join(origin[k] for k in options if k not in ("solver", "max_iter", "gtol", "point", "deflate"))


def _check_job_semantics(kind: str, options: dict, origin: dict) -> None:
    """Build the problem of ``options`` once and check the point spec against it."""
    from nclab.ufm.landscape.spec import parse_point_spec
    from nclab.ufm.problems import make_problem

    loss, popts = problem_options(options)
    where = ", ".join(f"{k}={v}" for k, v in options.items())
    if "lambda" in options:
        for k in ("lw", "lh"):
            if k in options:
                raise ValueError(f"{origin[k]}: give either lambda (sets lw = lh) or {k}, not both")
    try:
        problem = make_problem(loss, memory_limit=math.inf, **popts)
    except ValueError as err:
        raise ValueError(f"{_culprit(str(err), options, origin)}: {err} (in the job {where})") from None
    if kind == "landscape classify" and "point" in options:
        spec, arg = parse_point_spec(options["point"])
        if spec == "origin" and problem.loss not in ("ce", "mse"):
            raise ValueError(f"{origin['point']}: point origin (W = H = 0) exists for the ce and mse losses only, "
                             f"not for {problem.loss}")
        if spec == "lowdim" and arg >= problem.d:
            raise ValueError(f"{origin['point']}: point lowdim:{arg} needs D < d = {problem.d} (in the job {where})")


def parse_config(data: Any) -> SweepConfig:
    """Validate a config (a dict as read from YAML) and expand it into jobs (module docstring).
    Raises ValueError naming the key and the allowed values."""
    if not isinstance(data, dict):
        raise ValueError(f"config: must be a mapping with the keys {', '.join(TOP_KEYS)}, got {type(data).__name__}")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key; allowed: {', '.join(TOP_KEYS)}")
    kind = data.get("kind")
    if kind in PLANNED:
        raise ValueError(f"kind: {PLANNED[kind]}; allowed: {', '.join(repr(k) for k in KINDS)}")
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(repr(k) for k in KINDS)}, got {kind!r}")
    allowed = kind_options(kind)
    fixed, grid, origin = {}, {}, {}
    for section in ("options", "grid"):
        for name, value in _mapping(section, data.get(section)).items():
            where = f"{section}.{name}"
            if name not in allowed:
                raise ValueError(f"{where}: unknown option for kind {kind!r}; allowed: {', '.join(allowed)}")
            if name in origin:
                raise ValueError(f"{where}: {name} is given in both options and grid; give it once")
            origin[name] = where
            if section == "grid":
                if not isinstance(value, (list, tuple)) or not value:
                    raise ValueError(f"{where}: a grid entry must be a non-empty list of values, got {value!r}")
                values = [_cast(f"{where}[{i}]", name, v) for i, v in enumerate(value)]
                for i, v in enumerate(values):
                    if isinstance(v, str):
                        _check_text(f"{where}[{i}]", name, v)
                if len({repr(v) for v in values}) != len(values):
                    raise ValueError(f"{where}: the list repeats a value: {values}")
                grid[name] = values
            else:
                fixed[name] = _cast(where, name, value)
                if isinstance(fixed[name], str):
                    _check_text(where, name, fixed[name])
    seeds = _seeds(data.get("seeds"))
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"description: must be text, got {description!r}")

    jobs, checked = [], set()
    names = list(grid)
    for combo in itertools.product(*(grid[n] for n in names)):
        options = {**fixed, **dict(zip(names, combo))}
        signature = repr(sorted(options.items()))
        if signature not in checked:
            checked.add(signature)
            _check_job_semantics(kind, options, origin)
        jobs.extend({"kind": kind, "options": dict(options), "seed": s} for s in seeds)
    raw = {"kind": kind, "options": fixed, "grid": grid, "seeds": seeds}
    if description:
        raw["description"] = description
    return SweepConfig(kind=kind, options=fixed, grid=grid, seeds=seeds, jobs=jobs, raw=raw, description=description)


def load_config(source: Any) -> SweepConfig:
    """A :class:`SweepConfig` from a YAML file path, a YAML text or a dict (already a config:
    returned validated).  YAML is read with ``yaml.safe_load`` (no code runs)."""
    if isinstance(source, SweepConfig):
        return source
    if isinstance(source, dict):
        return parse_config(source)
    try:
        import yaml
    except ModuleNotFoundError:  # pragma: no cover - pyyaml is part of nclab[sweep]
        raise ModuleNotFoundError("nclab sweep reads YAML configs with pyyaml: pip install 'nclab[sweep]'") from None
    path = Path(source)
    as_file = isinstance(source, str) and "\n" not in source and (path.suffix in (".yaml", ".yml") or path.is_file())
    if isinstance(source, Path) or as_file:
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        text = path.read_text()
        name = str(path)
    else:
        text, name = str(source), "config"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{name}: not valid YAML ({' '.join(str(err).split())})") from None
    return parse_config(data)
