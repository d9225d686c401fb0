"""`nclab landscape classify` and `nclab landscape survey`: the landscape tools on the command line.

A thin layer over :mod:`nclab.ufm.landscape`: options -> problem (the same problem options as
``nclab ufm solve``, :func:`nclab.cli.ufm.problem_command`) and point
(:func:`nclab.ufm.landscape.spec.make_point`) -> :func:`nclab.ufm.landscape.classify` -> a table
and JSON; the survey (:func:`nclab.ufm.landscape.survey.run_survey`) -> tables, JSON and figures
(:mod:`nclab.cli.plots`).  Bad options print a one-line error and exit with status 2.

    nclab landscape classify --loss ce --classes 4 --dim 4 --point origin --json origin.json
    nclab landscape classify --loss ce --point lowdim:2
    nclab ufm solve --loss mse --dim 5 --save-point x.npz && nclab landscape classify --loss mse --dim 5 --point x.npz
    nclab landscape survey --out results/landscape --quick
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nclab.cli.console import console, err_console, fail, warn
from nclab.cli.ufm import build_problem, problem_command

landscape_app = typer.Typer(
    name="landscape",
    help="Landscape of the UFMs: classify critical points, survey solvers and critical points.",
    no_args_is_help=True,
    add_completion=False,
)

#: Short labels of the kinds (nclab.ufm.landscape.KINDS) for tables.
_KIND_SHORT = {
    "not_critical": "not critical",
    "global_minimiser": "global min",
    "strict_saddle": "strict saddle",
    "local_non_global_minimiser": "LOCAL MIN",
    "inconclusive": "inconclusive",
}


def _fmt(v, spec: str = ".3e") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec) if math.isfinite(v) else str(v)
    return str(v)


def classification_table(data: dict) -> Table:
    """A two-column table (fits 80 columns) of a classification's JSON (see classify_command)."""
    p = data["problem"]
    title = "landscape " + p["loss"] + ": " + ", ".join(f"{k}={v}" for k, v in p.items() if k != "loss" and v is not None)
    table = Table(title=title, title_justify="left")
    table.add_column("quantity", max_width=26)
    table.add_column("value", max_width=50, overflow="fold")
    cert = data.get("certificate") or {}
    point = data["point"]
    rows = [
        ("point", point["spec"]),
        ("kind", data["kind"]),
        ("reason", data.get("reason") or "—"),
        ("objective f", _fmt(data.get("objective"), ".12g")),
        ("closed-form optimum f*", _fmt(data.get("optimum"), ".12g")),
        ("relative gap", _fmt(data.get("relative_gap"))),
        ("|grad f|", _fmt(data.get("grad_norm"))),
        ("  threshold", _fmt(data.get("grad_threshold"))),
        ("lambda_min" + (" (deflated)" if data.get("deflated") else ""), _fmt(data.get("lambda_min"))),
        ("  threshold", _fmt(data.get("eig_threshold"))),
    ]
    if cert.get("applicable"):
        rows += [
            ("certificate sigma_1", _fmt(cert.get("sigma_1"))),
            ("  threshold sqrt(lw lh)", _fmt(cert.get("threshold"))),
            ("  ratio", _fmt(cert.get("ratio"), ".6f")),
            ("  holds (global)", _fmt(cert.get("holds"))),
        ]
    else:
        why = data.get("certificate_not_applicable")
        rows.append(("certificate", "not applicable" + (f": {why}" if why else "")))
    nd = data.get("direction_curvature") or {}
    if nd:
        rows.append(("null direction: curvature", f"{_fmt(nd.get('measured_curvature'))} "
                                                  f"(predicted {_fmt(nd.get('predicted_curvature'))})"))
    dec = data.get("decrease") or {}
    if dec:
        rows.append(("f along the eigenvector", f"{_fmt(dec.get('observed'))} (predicted {_fmt(dec.get('predicted'))}, "
                                                f"t={_fmt(dec.get('t'), '.1e')})"))
    rows += [
        ("Hessian-vector products", _fmt(data.get("hvps"))),
        ("seconds", _fmt(data.get("seconds"), ".3f")),
    ]
    if "solve" in point:
        s = point["solve"]
        rows.append(("point: L-BFGS", f"{s['status']}, {s['iterations']} it, |grad| {_fmt(s['grad_norm'])}"))
    for r in rows:
        table.add_row(*r)
    return table


def classify_command(
    problem_args: dict,
    point: str = typer.Option(
        "solution", "--point",
        help="origin | solution (L-BFGS from random_start(seed), gtol 1e-10) | random | lowdim:D "
             "(the d'=D minimiser embedded) | FILE.npz (W, H[, b]; X for sphere)"),
    seed: int = typer.Option(0, "--seed", help="seed of the point (random start, lowdim solve) and of Lanczos"),
    no_deflate: bool = typer.Option(False, "--no-deflate", help="keep the symmetry orbit's zero eigenvalues"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the classification as JSON here"),
) -> None:
    """Classify a point of a UFM: not critical, global minimiser (certified), strict saddle,
    local non-global minimiser, or inconclusive; print a table and optionally write JSON."""
    from nclab.io import write_json_atomic
    from nclab.ufm.landscape import classify
    from nclab.ufm.landscape.spec import make_point

    try:
        if seed < 0:
            raise ValueError(f"--seed must be >= 0, got {seed}")
        problem = build_problem(problem_args)
        x, info = make_point(problem, point, seed=seed)
        c = classify(problem, x, deflate=not no_deflate, seed=seed)
    except ValueError as err:
        fail(str(err))
    data = {**c.as_dict(), "problem": problem.describe(), "point": info}
    if data["certificate"] is None:
        from nclab.ufm.landscape import certificate

        data["certificate_not_applicable"] = certificate(problem, x).reason
    console.print(classification_table(data))
    if json_out is not None:
        write_json_atomic(json_out, data)
        console.print(f"wrote {json_out}")
    solved = info.get("solve")
    if solved is not None and not solved["converged"]:
        warn(f"--point solution: L-BFGS did not converge ({solved['stop_reason']}); the point may not be critical")
    if data["kind"] == "inconclusive":
        warn(f"inconclusive: {data.get('reason')}")


# ------------------------------------------------------------------------------------------------
# survey
# ------------------------------------------------------------------------------------------------
def starts_table(survey: dict) -> Table:
    """(a): per configuration and d, for each solver 'global/runs' and the median iterations."""
    s = survey["settings"]
    solvers = s["solvers"]
    table = Table(title=f"(a) random starts reaching the certified global minimum (K={s['K']}, n={s['n']}; "
                        f"gd capped at {s['gd_max_iter']} iterations)", title_justify="left")
    table.add_column("problem")
    table.add_column("d", justify="right")
    for name in solvers:
        table.add_column(name, justify="right")
    rows: dict[tuple, dict] = {}
    for r in survey["starts"]["summary"]:
        rows.setdefault((r["config"], r["d"]), {})[r["solver"]] = r
    for (config, d), by_solver in rows.items():
        cells = []
        for name in solvers:
            r = by_solver.get(name)
            if r is None:
                cells.append("—")
                continue
            style = "" if r["global"] == r["runs"] else "[yellow]"
            mark = "*" if r["capped"] else ""
            cells.append(f"{style}{r['global']}/{r['runs']} {int(r['median_iterations'])}it{mark}")
        table.add_row(config, str(d), *cells)
    table.caption = ("cell: end points certified global / runs, median iterations; "
                     "* stopped on the iteration cap")
    return table


def catalogue_table(survey: dict) -> Table:
    """(b): per configuration and d, the kinds of the origin, the lowdim points and the found points."""
    table = Table(title="(b) critical points, classified (expected kind in brackets where the theory says)",
                  title_justify="left")
    table.add_column("problem")
    table.add_column("d", justify="right")
    table.add_column("point")
    table.add_column("kind")
    table.add_column("lambda_min", justify="right")
    table.add_column("rel. gap", justify="right")
    for p in survey["catalogue"]["points"]:
        kind = _KIND_SHORT.get(p["kind"], p["kind"])
        if p["expected"] is not None and not p["matches"]:
            kind = f"[red]{kind} (exp. {_KIND_SHORT.get(p['expected'], p['expected'])})[/]"
        table.add_row(p["config"], str(p["d"]), p["label"], kind, _fmt(p["lambda_min"], ".2e"),
                      _fmt(p["relative_gap"], ".1e"))
    return table


def gu_shen_table(survey: dict) -> Table:
    g = survey["gu_shen"]
    table = Table(title=f"(c) Gu & Shen 2024, d = K = {g['d']}", title_justify="left")
    for col in ("problem", "starts at global", "saddles strict", "max saddle λ_min", "holds"):
        table.add_column(col, justify="right" if col != "problem" else "left")
    for config, v in g["configs"].items():
        table.add_row(config, f"{v['global']}/{v['starts']}", f"{v['strict']}/{v['saddles']}",
                      _fmt(v["largest_saddle_lambda_min"], ".2e"), "yes" if v["holds"] else "[red]NO[/]")
    table.caption = "starts: every solver but capped gd; saddles: origin and lowdim:D below the rank"
    return table


def undecided_notes(survey: dict) -> list[str]:
    """One sentence per (problem, d) whose uncapped runs did not all end at a certified global
    minimiser: how many, their kinds, and the first such run's reason (shortened)."""
    capped = set(survey["settings"].get("capped_solvers", ("gd",)))
    groups: dict[tuple, list[dict]] = {}
    for r in survey["starts"]["runs"]:
        if r["solver"] not in capped and r["kind"] != "global_minimiser":
            groups.setdefault((r["config"], r["d"]), []).append(r)
    notes = []
    for (config, d), rs in groups.items():
        kinds = ", ".join(f"{n} {k}" for k, n in sorted({k: sum(r["kind"] == k for r in rs) for k in
                                                          {r["kind"] for r in rs}}.items()))
        gap = max(abs(r["relative_gap"]) for r in rs if r["relative_gap"] is not None) if any(
            r["relative_gap"] is not None for r in rs) else None
        reason = (rs[0].get("reason") or "")[:160]
        notes.append(f"{config} d={d}: {len(rs)} uncapped end point(s) not certified global ({kinds}; "
                     f"largest |relative gap| {_fmt(gap, '.1e')}): {reason}")
    return notes


def survey_command(
    out: Path = typer.Option(..., "--out", help="folder for survey.json, starts.png and catalogue.png"),
    quick: bool = typer.Option(False, "--quick", help="K = 3, one weight decay and temperature, 2 starts (seconds)"),
) -> None:
    """Survey the landscapes: (a) every solver from random starts, end points classified; (b) a
    catalogue of constructed and found critical points; (c) the d = K claims of Gu & Shen 2024."""
    import torch

    from nclab.cli.plots import plot_catalogue, plot_starts
    from nclab.io import write_json_atomic
    from nclab.ufm.landscape.survey import run_survey, survey_settings

    if out.exists() and not out.is_dir():
        fail(f"--out must be a folder, got the file {out}")
    settings = survey_settings(quick=quick)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: a second thread only adds synchronisation
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as progress:
            task = progress.add_task("survey", total=None)

            def tick(done, total, text):
                progress.update(task, completed=done, total=total, description=text[:40])

            survey = run_survey(settings, tick)
    finally:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "survey.json", survey)
    plot_starts(survey, out / "starts.png")
    plot_catalogue(survey, out / "catalogue.png")
    console.print(starts_table(survey))
    console.print(catalogue_table(survey))
    console.print(gu_shen_table(survey))
    console.print(f"wrote {out / 'survey.json'}, {out / 'starts.png'}, {out / 'catalogue.png'} "
                  f"({survey['seconds']:.1f} s)")
    for line in undecided_notes(survey):
        warn(line)
    capped = [r for r in survey["starts"]["summary"] if r["capped"]]
    if capped:
        n = sum(r["capped"] for r in capped)
        warn(f"{n} run(s) stopped on their iteration cap ({', '.join(sorted({r['solver'] for r in capped}))}): "
             "not converged; their end points are classified as they are")
    ag = survey["catalogue"]["agreement"]
    if ag["held"] != ag["predicted"]:
        warn(f"{ag['predicted'] - ag['held']} of {ag['predicted']} constructed points were not of the predicted kind")
    if ag["spurious_local_minima"]:
        warn(f"{ag['spurious_local_minima']} point(s) classified as a local non-global minimiser")
    if survey["gu_shen"]["holds"] is False:
        warn("the d = K claims of Gu & Shen 2024 did not all hold in this survey (see table (c))")


landscape_app.command("classify")(problem_command(classify_command))
landscape_app.command("survey")(survey_command)


def register(app: typer.Typer) -> None:
    app.add_typer(landscape_app, name="landscape")
