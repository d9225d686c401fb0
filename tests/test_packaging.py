"""The package as a user installs it: a wheel (not the editable checkout), used from another folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_installed_outside_the_checkout_runs_bench_and_demo(tmp_path):
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert not list(site.glob("__editable__*")) and (site / "nclab" / "benchmarks" / "metrics.py").is_file()
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
