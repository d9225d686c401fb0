"""`nclab sweep` on the command line: a sweep killed with SIGKILL resumes with only the missing jobs
and ends with the table of an uninterrupted run; a bad config exits 2 with one line naming the key;
`nclab sweep plot` writes a PNG (and the CSV on request).

The uninterrupted run is the in-process run of the same jobs (:func:`nclab.sweep.jobs.run_chunk`),
which the backend tests show equal to the pool's and Ray's rows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("yaml")

from typer.testing import CliRunner  # noqa: E402

from nclab.cli import app  # noqa: E402
from nclab.sweep import parse_config, read_table  # noqa: E402
from nclab.sweep.jobs import run_chunk  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
runner = CliRunner()

CONFIG = """\
kind: ufm solve
description: CE UFM across beta = sqrt(n) lambda, for the kill test
options: {loss: ce, n: 3, d: 4}
grid:
  K: [3, 4]
  lambda: [0.05, 0.1, 0.3, 0.5]
seeds: 4
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nclab", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def _present(row: dict) -> dict:
    """A row without the columns it does not have (None: the table's union of columns)."""
    return {k: v for k, v in row.items() if v is not None}


def test_sigkill_then_restart_runs_only_the_missing_jobs(tmp_path):
    config = tmp_path / "beta.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    total = len(parse_config(__import__("yaml").safe_load(CONFIG)).jobs)
    # one worker (in the sweep's process), one job per task: a part file per job, so the kill lands
    # between parts
    proc = subprocess.Popen(_cli("sweep", str(config), "--out", str(out), "--workers", "1", "--chunk", "1"),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results").is_dir() and any(p.suffix == ".parquet" for p in (out / "results").iterdir()):
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the crash: the sweep process dies at once
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # and its pool (workers, fork server) with it
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = read_table(out).to_pylist()
    assert 0 < len(before) < total, f"the kill came too late or too early: {len(before)} of {total} rows"

    res = subprocess.run(_cli("sweep", str(config), "--out", str(out), "--workers", "1"), env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ran = re.search(r"run now\s*\S\s*(\d+)", res.stdout)
    assert ran and int(ran.group(1)) == total - len(before), res.stdout
    after = read_table(out).to_pylist()
    assert len(after) == total and len(list((out / "results").glob("part-*.parquet"))) == 1
    by_key = {r["job_key"]: _present(r) for r in after}
    for r in before:  # finished jobs were not run again: the same row, wall time included
        assert by_key[r["job_key"]] == _present(r)

    expected = sorted(run_chunk(parse_config(__import__("yaml").safe_load(CONFIG)).jobs), key=lambda r: r["job_key"])
    for got, want in zip(after, expected):
        assert got["job_key"] == want["job_key"]
        got, want = _present(got), _present(want)
        got.pop("seconds"), want.pop("seconds")
        assert got == want


@pytest.mark.parametrize("text, key", [
    ("kind: ufm solve\ngrid: {K: [4, 1]}\n", "grid.K[1]"),
    ("kind: ufm solve\noptions: {solver: adam}\n", "options.solver"),
    ("kind: train\n", "kind"),
    ("kind: ufm solve\nseeds: [0, 0]\n", "seeds"),
    ("kind: [ufm solve\n", "not valid YAML"),
])
def test_a_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, text, key):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    res = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0], res.output
    assert not (tmp_path / "out").exists()


def test_plot_writes_a_heat_map_lines_and_the_csv(tmp_path):
    from nclab.sweep import run_sweep

    out = tmp_path / "out"
    run_sweep({"kind": "ufm solve", "options": {"n": 3, "d": 3}, "grid": {"K": [2, 3], "lambda": [0.1, 0.4]}},
              out, workers=1)
    res = runner.invoke(app, ["sweep", "plot", str(out), "--x", "beta", "--y", "K", "--value", "nc2_etf_W",
                              "--log-value", "--csv", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    png = out / "nc2_etf_W_by_beta_K.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = (tmp_path / "t.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 and "job_key" in csv[0] and "nc2_etf_W" in csv[0]

    res = runner.invoke(app, ["sweep", "plot", str(out), "--x", "lambda", "--value", "converged", "--group", "K",
                              "--png", str(tmp_path / "lines.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "lines.png").read_bytes()[:4] == b"\x89PNG"

    res = runner.invoke(app, ["sweep", "plot", str(out), "--x", "lamda", "--value", "nc1"])
    assert res.exit_code == 2 and "error:" in res.output and "'lamda'" in res.output


def test_a_failed_job_is_reported_with_exit_1_and_kept_in_the_table(tmp_path):
    config = tmp_path / "c.yaml"
    missing = tmp_path / "missing.npz"
    config.write_text(f"kind: landscape classify\noptions: {{K: 3, n: 2, d: 3}}\n"
                      f"grid: {{point: [origin, '{missing}']}}\n")
    res = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 1, res.output
    assert "warning: 1 job(s) failed" in " ".join(res.output.split()) and "--retry-failed" in res.output
    rows = read_table(tmp_path / "out").to_pylist()
    assert sorted(r["error"] is None for r in rows) == [False, True]


@pytest.mark.parametrize("args, text", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--address", "auto"], "--address auto joins a Ray cluster: add --backend ray"),
])
def test_bad_options_exit_2_before_anything_runs(tmp_path, args, text):
    config = tmp_path / "c.yaml"
    config.write_text("kind: ufm solve\n")
    res = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out"), *args])
    assert res.exit_code == 2 and res.output.strip() == f"error: {text}"
    assert not (tmp_path / "out").exists()
