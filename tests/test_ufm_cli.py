"""`nclab ufm solve` (nclab.cli.ufm) and the UFM demo (nclab.cli.demo_ufm), through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from nclab.cli import app
from nclab.ufm.run import RESULT_KEYS

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see conftest


def _run(*args):
    return runner.invoke(app, ["ufm", "solve", *args])


def test_solve_writes_json_with_the_required_keys_and_a_png(tmp_path):
    out, fig = tmp_path / "sub" / "ce.json", tmp_path / "ce.png"
    res = _run("--loss", "ce", "--classes", "4", "--per-class", "3", "--dim", "3", "--lambda-w", "5e-3",
               "--lambda-h", "1e-2", "--lambda-b", "0", "--bias", "--solver", "lbfgs", "--seed", "2",
               "--max-iter", "2000", "--gtol", "1e-10", "--json", str(out), "--plot", str(fig))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(RESULT_KEYS) <= set(data)
    assert {"objective", "optimum", "gap", "grad_norm", "iterations", "seconds", "solver", "metrics"} <= set(data)
    assert data["solver"] == "lbfgs" and data["problem"]["K"] == 4 and data["problem"]["d"] == 3
    assert data["problem"]["lh"] == 1e-2 and data["options"]["seed"] == 2
    assert abs(data["gap"]) <= 1e-9 * data["optimum"]
    assert data["metrics"]["nc1"] < 1e-6
    assert data["log"]["iterations"][-1]["iter"] == data["iterations"]
    assert fig.read_bytes()[:8] == PNG_MAGIC
    assert not list(out.parent.glob("*.tmp"))  # atomic write leaves no temporary file
    assert "closed-form optimum" in res.output and "relative gap" in res.output


@pytest.mark.parametrize(
    "args,key,converges",
    [
        (["--loss", "sphere", "--points", "9", "--dim", "3", "--tau", "3", "--solver", "rtr"], "frame_potential", True),
        (["--loss", "normalized", "--classes", "3", "--per-class", "2", "--tau", "4", "--solver", "rcg"], "nc1", True),
        (["--loss", "mse", "--no-bias", "--solver", "rgd"], "nc1", True),
        (["--loss", "ce", "--solver", "gd", "--max-iter", "30"], "nc1", False),  # the papers' slow baseline
    ],
)
def test_solve_for_every_loss(tmp_path, args, key, converges):
    out = tmp_path / "r.json"
    res = _run(*args, "--json", str(out), "--plot", str(tmp_path / "r.png"))
    assert res.exit_code == (0 if converges else 1), res.output
    data = json.loads(out.read_text())
    assert data["converged"] is converges and ("warning:" in res.output) is not converges
    assert (data["status"] in ("optimal", "converged")) is converges and bool(data["warnings"]) is not converges
    assert key in data["metrics"]
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC
    if data["loss"] == "sphere":
        assert data["optimum"] is None and data["gap"] is None  # n > d + 1: no closed form
        assert data["metrics"]["frame_potential_bound"] == pytest.approx(27.0)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--classes", "1"], "K must be >= 2"),
        (["--lambda-w", "-1e-3"], "lw must be > 0"),
        (["--loss", "mse", "--lambda-h", "-2"], "lh must be > 0"),
        (["--lambda-b", "-1"], "lb must be >= 0"),
        (["--loss", "normalized", "--tau", "0"], "tau must be > 0"),
        (["--loss", "sphere", "--tau", "-1"], "tau must be > 0"),
        (["--dim", "0"], "d must be >= 1"),
        (["--loss", "sphere", "--points", "1"], "n_points must be >= 2"),
        (["--loss", "ce", "--tau", "2"], "--tau does not apply to --loss ce"),
        (["--loss", "sphere", "--classes", "3"], "--classes does not apply to --loss sphere"),
        (["--gtol", "-1"], "--gtol must be >= 0"),
        (["--ftol", "-1"], "--ftol must be >= 0"),
        (["--max-iter", "-5"], "--max-iter must be >= 0"),
        (["--plot", "figure.jpeg"], "--plot must end in"),
    ],
)
def test_bad_options_give_a_one_line_error_and_exit_code_2(args, fragment):
    res = _run(*args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert fragment in " ".join(res.output.split())  # rich may wrap a long line
    assert "error:" in res.output


def test_unknown_solver_is_a_usage_error():
    res = _run("--solver", "newton")
    assert res.exit_code == 2
    assert "Traceback" not in res.output and "newton" in res.output


def test_demo_writes_a_table_json_and_figures(tmp_path):
    from rich.console import Console

    from nclab.cli.demo_ufm import run_ufm_demo

    console = Console(record=True, width=120)
    results = run_ufm_demo(tmp_path, console=console, solvers=("lbfgs", "rtr"))
    assert [r["loss"] for r in results] == ["ce", "mse", "normalized", "sphere"]
    for r in results:
        assert abs(r["relative_gap"]) <= 1e-9
        assert (tmp_path / f"ufm_{r['loss']}.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "ufm_demo.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((tmp_path / "ufm_demo.json").read_text())
    assert len(summary["results"]) == 4 and set(summary["solver_comparison"]) == {"ce", "mse", "normalized", "sphere"}
    excess = [s["frame_potential_excess"] for s in summary["sphere_sweep"]]
    assert excess[-1] < excess[0]
    assert "closed form" in console.export_text()


def test_a_capped_run_says_it_did_not_converge(tmp_path):
    """Honest reporting: 3 iterations of L-BFGS are not a solution; the JSON says converged = false,
    the table says NO, stderr carries a warning line and the exit status is 1 (not 0, not 2)."""
    out = tmp_path / "capped.json"
    res = _run("--loss", "normalized", "--tau", "20", "--max-iter", "3", "--json", str(out))
    assert res.exit_code == 1, res.output
    data = json.loads(out.read_text())
    assert data["converged"] is False and data["stop_reason"] == "max_iter" and data["iterations"] == 3
    assert data["status"] == "not_converged" and data["warnings"]
    text = " ".join(res.output.split())
    assert "warning: did not converge" in text and "max_iter" in text and "Traceback" not in text
    assert "NO" in text


def test_the_issue_case_at_tau_20_is_solved_to_the_closed_form(tmp_path):
    """The report that opened the numerics issue: K=5, n=4, d=6, tau=20, seed 1 stopped at a
    relative gap of 22 and was printed as a normal solve; it must reach f* and collapse."""
    out = tmp_path / "tau20.json"
    res = _run("--loss", "normalized", "--classes", "5", "--per-class", "4", "--dim", "6", "--tau", "20",
               "--seed", "1", "--json", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["converged"] is True and data["status"] == "optimal"
    assert abs(data["relative_gap"]) < 1e-12
    assert data["structure"]["feature_error"] < 1e-6 and data["structure"]["etf_W"] < 1e-6
    assert data["metrics"]["nc2_etf_W"] < 1e-6


def test_which_option_applies_to_which_loss_comes_from_the_problems_defaults():
    """nclab.ufm.problems.DEFAULTS owns which problem takes which option: every flag is accepted
    exactly for the losses whose defaults name its option, and --help shows those defaults."""
    from nclab.cli.ufm import _FLAGS, problem_options
    from nclab.ufm.problems import DEFAULTS

    values = dict(classes=3, per_class=2, points=5, dim=4, lambda_w=1e-3, lambda_h=1e-3, lambda_b=0.0,
                  bias=True, tau=2.0)
    for key, (flag, option) in _FLAGS.items():
        for loss, defaults in DEFAULTS.items():
            if option in defaults:
                assert problem_options(loss, {key: values[key]}) == {option: values[key]}
            else:
                with pytest.raises(ValueError, match=f"{flag} does not apply to --loss {loss}"):
                    problem_options(loss, {key: values[key]})
    text = " ".join(runner.invoke(app, ["ufm", "solve", "--help"], terminal_width=200).output.split())
    assert f"default {DEFAULTS['ce']['lw']:g}" in text and f"default {DEFAULTS['sphere']['n_points']}" in text
