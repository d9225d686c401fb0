"""`nclab ufm solve`: solve an unconstrained feature model and compare with its closed form.

A thin layer over :func:`nclab.ufm.run.run_solver`: options -> problem and solver -> a rich summary
table, a JSON result (``--json``, written atomically) and a figure (``--plot``).  Bad options
print a one-line error and exit with status 2.  A run that did not converge (a cap, a stall, a
failed line search) or that converged more than 1e-6 (relative) above the closed-form optimum
prints a warning line on stderr, says so in the table and the JSON (``converged``, ``status``,
``warnings``) and exits with status 1.

    nclab ufm solve --loss ce --classes 10 --per-class 100 --dim 64 --lambda-w 5e-4 --lambda-h 5e-4
    nclab ufm solve --loss sphere --points 20 --dim 3 --tau 5 --solver rtr --plot sphere.png
    nclab ufm solve --loss ce --dim 4 --save-point x.npz    # then: nclab landscape classify --point x.npz
    nclab ufm solve --loss ce --classes 1000 --per-class 50 --dim 1000 --device cuda --dtype float64

``--device cuda`` where torch sees no GPU is a one-line error (exit 2), as is a bad ``--dtype``.
"""

from __future__ import annotations

import math
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from nclab.cli.console import console, err_console, fail, warn
from rich.table import Table

from nclab.ufm.problems import DEFAULTS, LOSSES


ufm_app = typer.Typer(
    name="ufm",
    help="Unconstrained feature models: solve, compare with the closed-form optimum.",
    no_args_is_help=True,
    add_completion=False,
)


#: The problems by name (nclab.ufm.problems.LOSSES).
Loss = Enum("Loss", {name: name for name in LOSSES}, type=str)


class SolverName(str, Enum):
    lbfgs = "lbfgs"
    gd = "gd"
    rgd = "rgd"
    rcg = "rcg"
    rtr = "rtr"


#: The command line's problem options: parameter -> (flag, make_problem option, type, help).
#: Which loss takes an option, and its default, is nclab.ufm.problems.DEFAULTS' to say.  Every
#: command that builds a problem takes them through :func:`problem_command`.
_OPTIONS = {
    "classes": ("--classes", "K", int, "K, number of classes"),
    "per_class": ("--per-class", "n", int, "n, samples per class"),
    "points": ("--points", "n_points", int, "number of points n"),
    "dim": ("--dim", "d", int, "d, feature dimension"),
    "lambda_w": ("--lambda-w", "lw", float, "weight decay of W"),
    "lambda_h": ("--lambda-h", "lh", float, "weight decay of H"),
    "lambda_b": ("--lambda-b", "lb", float, "weight decay of b"),
    "bias": ("--bias/--no-bias", "bias", bool, "learn a bias b"),
    "tau": ("--tau", "tau", float, "temperature"),
}
_FLAGS = {key: (flag, name) for key, (flag, name, _, _) in _OPTIONS.items()}


def losses_taking(option: str) -> tuple[str, ...]:
    """The losses whose problem takes ``option`` (a make_problem option name), from DEFAULTS."""
    return tuple(loss for loss, defaults in DEFAULTS.items() if option in defaults)


def _show_default(value) -> str:
    if value is None:
        return "K"  # make_problem: d = None means d = K
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(text: str, option: str) -> str:
    """``text`` followed by the losses that take ``option`` and their defaults (from DEFAULTS)."""
    losses = losses_taking(option)
    by_value: dict[str, list[str]] = {}
    for loss in losses:
        by_value.setdefault(_show_default(DEFAULTS[loss][option]), []).append(loss)
    if len(by_value) == 1:
        default = f"default {next(iter(by_value))}"
    else:
        default = "default " + "; ".join(f"{v} for {', '.join(ls)}" for v, ls in by_value.items())
    scope = "" if len(losses) == len(DEFAULTS) else ", ".join(losses) + "; "
    return f"{text} ({scope}{default})"


def problem_command(fn):
    """Give the command ``fn`` the problem options (``--loss`` and :data:`_OPTIONS`, help texts
    and defaults from DEFAULTS) in front of its own; ``fn`` receives them as one keyword
    ``problem_args`` (``{"loss": str, "classes": int | None, ...}``) for :func:`build_problem`."""
    import functools
    import inspect

    params = [inspect.Parameter("loss", inspect.Parameter.KEYWORD_ONLY, annotation=Loss,
                                default=typer.Option(Loss(LOSSES[0]), "--loss", help=" | ".join(LOSSES)))]
    for key, (flag, name, kind, text) in _OPTIONS.items():
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                        default=typer.Option(None, flag, help=_help(text, name))))
    params.append(inspect.Parameter(
        "memory_limit", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[float],
        default=typer.Option(None, "--memory-limit", help="GiB the solve may use; a larger problem is refused "
                                                          "before it allocates (default: the memory available now)")))
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
           for p in inspect.signature(fn).parameters.values() if p.name != "problem_args"]

    @functools.wraps(fn)
    def command(**kwargs):
        problem_args = {k: kwargs.pop(k) for k in ("loss", *_OPTIONS, "memory_limit")}
        return fn(problem_args=problem_args, **kwargs)

    command.__signature__ = inspect.Signature(params + own)
    del command.__wrapped__  # typer must see the new signature, not fn's
    return command


def build_problem(problem_args: dict, *, device=None, dtype=None):
    """The problem of the options collected by :func:`problem_command` (ValueError naming a bad
    option, or an option that does not apply to the loss), on ``device`` in ``dtype``
    (``make_problem``'s; None: the CPU, float64)."""
    from nclab.ufm.problems import make_problem

    args = dict(problem_args)
    loss = args.pop("loss")
    memory_limit = args.pop("memory_limit", None)
    loss = loss.value if isinstance(loss, Enum) else str(loss)
    return make_problem(loss, memory_limit=memory_limit, device=device, dtype=dtype,
                        **problem_options(loss, args))


_SUMMARY_METRICS = ("nc1", "nc2_etf_means", "nc2_etf_W", "nc3", "nc3_duality_gram", "nc4", "bias_collapse")
_SPHERE_METRICS = ("frame_potential", "frame_potential_bound", "frame_potential_excess", "welch_bound",
                   "max_coherence", "etf_gram_error")


def problem_options(loss: str, given: dict) -> dict:
    """Map the command line's options to ``make_problem`` options; an option that does not apply
    to ``loss`` is an error (ValueError naming it), an option left out takes the default."""
    out = {}
    for key, value in given.items():
        if value is None:
            continue
        flag, name = _FLAGS[key]
        losses = losses_taking(name)
        if loss not in losses:
            raise ValueError(f"{flag} does not apply to --loss {loss} (it applies to: {', '.join(losses)})")
        out[name] = value
    return out


def _fmt(v, spec=".6g") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return format(v, spec)
    return str(v)


def summary_table(result: dict) -> Table:
    """A rich table of a :func:`nclab.ufm.run.solve` result."""
    p = result["problem"]
    title = f"UFM {result['loss']}: " + ", ".join(f"{k}={v}" for k, v in p.items() if k != "loss" and v is not None)
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    ev = result["evaluations"]
    rows = [
        ("solver", result["solver"]),
        ("objective f", _fmt(result["objective"], ".15g")),
        ("closed-form optimum f*", _fmt(result["optimum"], ".15g")),
        ("gap f - f*", _fmt(result["gap"], ".3e")),
        ("relative gap", _fmt(result["relative_gap"], ".3e")),
        ("Riemannian gradient norm", _fmt(result["grad_norm"], ".3e")),
        ("iterations", str(result["iterations"])),
        ("evaluations (cost/grad/hess)", f"{ev['cost']}/{ev['grad']}/{ev['hess']}"),
        ("seconds", _fmt(result["seconds"], ".3f")),
        ("stop reason", result["stop_reason"]),
        ("converged", "yes" if result["converged"] else "NO"),
        ("status", result["status"]),
    ]
    for i, phase in enumerate(result.get("options", {}).get("phases") or ()):  # --dtype mixed
        rows.insert(7 + i, (f"  {phase['dtype']} phase", f"{phase['iterations']} its, {phase['seconds']:.3f} s"))
    for name in _SUMMARY_METRICS + _SPHERE_METRICS:  # each problem reports one of the two sets
        if name in result["metrics"]:
            rows.append((name, _fmt(result["metrics"][name], ".3e")))
    for name, v in result.get("structure", {}).items():
        rows.append((f"structure: {name}", _fmt(v, ".3e")))
    for r in rows:
        table.add_row(*r)
    return table


def solve_command(
    problem_args: dict,
    solver: SolverName = typer.Option(SolverName.lbfgs, "--solver", help="lbfgs | gd | rgd | rcg | rtr"),
    seed: int = typer.Option(0, "--seed", help="seed of the random start"),
    max_iter: Optional[int] = typer.Option(None, "--max-iter", help="iteration cap (default: the solver's)"),
    gtol: Optional[float] = typer.Option(
        None, "--gtol", help="relative gradient tolerance: stop when |grad f| <= gtol |f|/max(|x|,1) (default 1e-8)"),
    ftol: Optional[float] = typer.Option(
        None, "--ftol", help="stall test: relative objective change per iteration (default 1e-15; 0: off)"),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="wall-clock cap in seconds"),
    metrics_every: int = typer.Option(10, "--metrics-every", help="NC metrics every k iterations (0: end only)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the result as JSON here"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the figure (gap and nc1 / frame potential) here"),
    save_point: Optional[Path] = typer.Option(
        None, "--save-point", help="write the solution as .npz (W, H[, b]; X for sphere) for `nclab landscape classify --point`"),
    device: str = typer.Option("cpu", "--device", help="where to compute: cpu | cuda | cuda:N"),
    dtype: str = typer.Option(
        "float64", "--dtype",
        help="float64 | float32 (default --gtol 1e-4) | mixed (float32 first, then float64 to --gtol)"),
) -> None:
    """Solve a UFM from a random start; print objective, closed-form optimum, gap, NC metrics and
    the minimiser's structure; optionally write JSON and a figure."""
    from nclab.cli.plots import plot_result
    from nclab.ufm.run import run_solver, write_json

    try:
        if seed < 0:
            raise ValueError(f"--seed must be >= 0, got {seed}")
        if max_iter is not None and max_iter < 0:
            raise ValueError(f"--max-iter must be >= 0, got {max_iter}")
        if gtol is not None and not gtol >= 0:
            raise ValueError(f"--gtol must be >= 0, got {gtol}")
        if ftol is not None and not ftol >= 0:
            raise ValueError(f"--ftol must be >= 0, got {ftol}")
        if max_time is not None and not max_time > 0:
            raise ValueError(f"--max-time must be > 0, got {max_time}")
        if metrics_every < 0:
            raise ValueError(f"--metrics-every must be >= 0, got {metrics_every}")
        if plot is not None and plot.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise ValueError(f"--plot must end in .png, .pdf or .svg, got {plot.name!r}")
        if save_point is not None and save_point.suffix != ".npz":
            raise ValueError(f"--save-point must end in .npz, got {save_point.name!r}")
        if dtype not in ("float64", "float32", "mixed"):
            raise ValueError(f"--dtype must be float64, float32 or mixed, got {dtype!r}")
        problem = build_problem(problem_args, device=device, dtype="float64" if dtype == "mixed" else dtype)
    except ValueError as err:
        fail(str(err))
    loss_name = problem.loss

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    optimum = problem.optimum
    solver_opts = {k: v for k, v in (("max_time", max_time), ("ftol", ftol)) if v is not None}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(f"{solver.value} on {loss_name}", total=None)
        last = [0.0]

        def callback(it, x, f, gnorm):
            now = time.perf_counter()
            if now - last[0] >= 0.1:
                last[0] = now
                gap = "" if optimum is None else f"  gap {f - optimum:.3e}"
                progress.update(task, description=f"{solver.value} on {loss_name}: iter {it}  f {f:.10g}{gap}  |grad| {gnorm:.2e}")
            return False

        try:
            x, result = run_solver(problem, solver.value, seed, max_iter=max_iter, gtol=gtol,
                                   metrics_every=metrics_every, callback=callback,
                                   mixed_precision=dtype == "mixed", **solver_opts)
        except ValueError as err:
            fail(str(err))
    console.print(summary_table(result))
    if json_out is not None:
        write_json(json_out, result)
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot_result(result, plot)
        console.print(f"wrote {plot}")
    if save_point is not None:
        from nclab.ufm.pointfile import save_point as write_point

        write_point(save_point, problem, x)
        console.print(f"wrote {save_point}")
    for message in result["warnings"]:
        warn(message)
    if result["status"] not in ("optimal", "converged"):
        raise typer.Exit(code=1)


solve_command = problem_command(solve_command)
ufm_app.command("solve")(solve_command)


def register(app: typer.Typer) -> None:
    app.add_typer(ufm_app, name="ufm")
