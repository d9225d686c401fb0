"""The package as a user installs it: a wheel (not the editable checkout), used from another folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_installed_outside_the_checkout_runs_bench_and_demo(tmp_path):
    # build from a clean copy of what a release contains (a stale build/ folder in the checkout
    # would otherwise leak old modules into the wheel)
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert not list(site.glob("__editable__*")) and (site / "nclab" / "benchmarks" / "metrics.py").is_file()
    packaged = {p.relative_to(site / "nclab").as_posix() for p in (site / "nclab").rglob("*.py")}
    shipped = {p.relative_to(REPO / "src" / "nclab").as_posix() for p in (REPO / "src" / "nclab").rglob("*.py")}
    assert packaged == shipped  # every module, and no stale one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def nclab(*args, timeout=300):
        return subprocess.run([sys.executable, "-m", "nclab", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=timeout)

    where = subprocess.run([sys.executable, "-c", "import nclab; print(nclab.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel, not the checkout
    res = nclab("bench", "--help")
    assert res.returncode == 0 and "benchmark" in res.stdout, res.stdout + res.stderr
    res = nclab("demo", "--out", "demo-out")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = elsewhere / "demo-out"
    for name in ("ufm/ufm_demo.json", "ufm/ufm_demo.png", "metrics/metrics_demo.json", "metrics/metrics_demo.png"):
        assert (out / name).is_file(), name
