"""nclab.reproduce.runner and `nclab reproduce`: missing and crashing targets are reported (not run /
failed) and the report is still written; provenance; the command's exit status and verdict table;
`make demo` in a fresh clone."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nclab.cli import app
from nclab.reproduce import runner
from nclab.reproduce.claims import Context, Evidence, Target, check

REPO = Path(__file__).resolve().parents[1]


def _good_run(ctx: Context):
    return [
        check(ctx, "good.holds", title="holds", source="S 2020, Theorem 1", statement="s", criterion="c",
              experiment=lambda: Evidence(True, "fine", {"x": 1.0})),
        check(ctx, "good.needs_gpu", title="needs a GPU", source="S 2020, Section 4", statement="s", criterion="c",
              experiment=lambda: Evidence(None, "not run", reason="no GPU")),
    ]


def _bad_run(ctx: Context):
    return [check(ctx, "bad.fails", title="fails", source="S", statement="s", criterion="c",
                  experiment=lambda: Evidence(False, "too big", {"y": 3.0}, reason="y = 3 > 1")),
            check(ctx, "bad.raises", title="raises", source="S", statement="s", criterion="c",
                  experiment=lambda: 1 / 0)]


def _crash(ctx: Context):
    raise RuntimeError("the target fell over")


FAKES = {
    "zhu2021": Target("zhu2021", "good", "S 2020", _good_run),
    "yaras2022": Target("yaras2022", "bad", "S 2021", _bad_run),
    "gushen2024": Target("gushen2024", "crash", "S 2022", _crash),
}


def fake_loader(name):
    if name in FAKES:
        return FAKES[name]
    raise runner.TargetMissing(f"module nclab.reproduce.{name} is not part of this installation of nclab")


def test_missing_and_crashing_targets_are_reported_and_the_report_is_written(tmp_path):
    lines = []
    result = runner.reproduce("all", tmp_path, scale="tiny", loader=fake_loader, progress=lines.append)
    by_target = {t["name"]: t for t in result["targets"]}
    assert list(by_target) == list(runner.TARGET_NAMES)
    assert [c["verdict"] for c in by_target["zhu2021"]["claims"]] == ["passed", "not run"]
    assert [c["verdict"] for c in by_target["yaras2022"]["claims"]] == ["failed", "failed"]
    assert "ZeroDivisionError" in by_target["yaras2022"]["claims"][1]["reason"]
    crash = by_target["gushen2024"]
    assert crash["status"] == "crashed" and crash["claims"][0]["verdict"] == "failed"
    assert "RuntimeError: the target fell over" in crash["claims"][0]["reason"]
    assert "Traceback" in crash["claims"][0]["evidence"]["traceback"]
    missing = by_target["lu2022"]
    assert missing["status"] == "missing" and missing["claims"][0]["verdict"] == "not run"
    assert "not part of this installation" in missing["claims"][0]["reason"]
    assert result["counts"] == {"passed": 1, "failed": 3, "not run": 2} and not result["ok"]
    for name in runner.TARGET_NAMES:  # every target has its claims.json, crashed or missing alike
        saved = json.loads((tmp_path / name / "claims.json").read_text())
        assert saved["name"] == name and saved["claims"]
    page = (tmp_path / "report.html").read_text()
    assert "the target fell over" in page and "not part of this installation" in page
    assert json.loads((tmp_path / "results.json").read_text())["counts"] == result["counts"]
    assert any(line.startswith("[3/4] gushen2024") for line in lines)


def test_a_target_returning_nonsense_is_a_failure(tmp_path):
    result = runner.reproduce(["lu2022"], tmp_path, scale="tiny",
                              loader=lambda name: Target(name, "t", "c", lambda ctx: "not a list"))
    claim = result["targets"][0]["claims"][0]
    assert claim["verdict"] == "failed" and "not a non-empty list of Claim" in claim["reason"]


def test_load_target_tells_a_missing_module_from_a_broken_one(monkeypatch):
    real = importlib.import_module

    def fake_import(name, *args):
        if name == "nclab.reproduce.zhu2021":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if name == "nclab.reproduce.yaras2022":
            raise ModuleNotFoundError("No module named 'somedep'", name="somedep")
        return real(name, *args)

    monkeypatch.setattr(runner.importlib, "import_module", fake_import)
    with pytest.raises(runner.TargetMissing, match="nclab.reproduce.zhu2021 is not part"):
        runner.load_target("zhu2021")
    with pytest.raises(ModuleNotFoundError, match="somedep"):  # a crash, not an absence
        runner.load_target("yaras2022")
    assert runner.load_target("lu2022").name == "lu2022"
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        runner.load_target("nope")


def test_resolve_names_and_bad_arguments(tmp_path):
    assert runner.resolve_names("all") == list(runner.TARGET_NAMES)
    assert runner.resolve_names(["lu2022", "all"]) == ["lu2022", "zhu2021", "yaras2022", "gushen2024"]
    with pytest.raises(ValueError, match="unknown target 'x'"):
        runner.resolve_names(["x"])
    with pytest.raises(ValueError, match="scale must be one of"):
        runner.reproduce("lu2022", tmp_path, scale="huge")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        runner.reproduce("lu2022", tmp_path, seed=-1)


# -- the command ---------------------------------------------------------------------------------
cli = CliRunner()


def test_command_exit_status_table_and_report_path(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "load_target", fake_loader)
    ok = cli.invoke(app, ["reproduce", "zhu2021", "--tiny", "--out", str(tmp_path / "a"), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output  # passed and not run (with its reason)
    lines = ok.output.splitlines()
    assert any("verdicts" in line for line in lines) and any("holds" in line and "passed" in line for line in lines)
    top = next(i for i, line in enumerate(lines) if "verdicts" in line)
    bottom = next(i for i, line in enumerate(lines) if "1 passed, 0 failed, 1 not run" in line)
    assert bottom > top + 3 and max(len(line) for line in lines[top:bottom + 1]) <= 80  # the table
    assert f"report: {tmp_path / 'a' / 'report.html'}" in ok.output
    prov = json.loads((tmp_path / "a" / "results.json").read_text())["provenance"]
    assert prov["command"] == f"nclab reproduce zhu2021 --out {tmp_path / 'a'} --tiny --seed 0 --device cpu"
    bad = cli.invoke(app, ["reproduce", "all", "--tiny", "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert bad.exit_code == 1, bad.output
    assert "crashed: RuntimeError" in bad.output and "module missing" in bad.output


@pytest.mark.parametrize("args,message", [
    (["--quick", "--full"], "give one of --quick, --full"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["--set", "novalue"], "--set needs KEY=VALUE"),
])
def test_command_bad_input_is_one_error_line(tmp_path, args, message):
    res = cli.invoke(app, ["reproduce", "lu2022", "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_heads_is_still_in_the_group():
    res = cli.invoke(app, ["reproduce", "--help"])
    assert res.exit_code == 0
    for name in (*runner.TARGET_NAMES, "all", "heads"):
        assert name in res.output


# -- make demo in a fresh clone ------------------------------------------------------------------
def test_make_demo_in_a_fresh_clone_prints_the_verdict_table(tmp_path):
    venv = Path(sys.prefix)
    for tool in ("git", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not (REPO / ".git").exists() or not (venv / "bin" / "nclab").exists():
        pytest.skip("needs a git checkout and a virtualenv with the nclab script")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(clone / "src"), "COLUMNS": "80"}
    # -o: the install stamp counts as up to date, so the shared virtualenv is not reinstalled
    res = subprocess.run(
        ["make", "-C", str(clone), "demo", f"VENV={venv}", "DEMO_TARGET=lu2022", "DEMO_ARGS=--tiny",
         f"DEMO_OUT={out}", "-o", f"{venv}/.nclab-installed"],
        capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "pip install" not in res.stdout
    assert "verdicts" in res.stdout and "lu2022" in res.stdout and "passed" in res.stdout
    assert f"report: {out / 'report.html'}" in res.stdout
    assert (out / "report.html").exists()
    # the clone's code ran (not the installed copy's)
    prov = json.loads((out / "results.json").read_text())["provenance"]
    assert prov["source"] == str(clone.resolve())
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert prov["git_commit"] == head and prov["git_dirty"] is False
