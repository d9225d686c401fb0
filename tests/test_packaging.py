"""The package as a user installs it: an sdist and a wheel built by ``python -m build``, the wheel
installed outside the checkout (not the editable install) and used from another folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "nclab").rglob("*.py"))
# what a release is made of (a copy of these, not of the checkout: no stale build/, no run outputs)
RELEASE = ["pyproject.toml", "README.md", "CHANGELOG.md", "MANIFEST.in", "Makefile", "mkdocs.yml", "LICENSE",
           "src", "tests", "docs", "benchmarks"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", ".pytest_cache")


def _clean_env() -> dict:
    """The environment of a user's shell: no PYTHONPATH pointing at the checkout, no user site."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """``python -m build`` (sdist, then the wheel from the sdist) on a clean copy of the release files,
    planted with the kind of files a working checkout accumulates, which must not ship."""
    root = tmp_path_factory.mktemp("release")
    source = root / "source"
    source.mkdir()
    for name in RELEASE:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=IGNORE)
        elif path.is_file():
            shutil.copy(path, source / name)
    strays = ["results/demo/ufm/ufm_demo.json", "runs/a/log.jsonl", "site/index.html", "build/lib/nclab/old.py",
              "tests/__pycache__/test_io.cpython-311.pyc", "src/nclab/__pycache__/io.cpython-311.pyc",
              "docs/tutorials/figure.png", "benchmarks/scratch.npz"]
    for stray in strays:
        (source / stray).parent.mkdir(parents=True, exist_ok=True)
        (source / stray).write_text("not part of a release\n")
    out = root / "dist"
    res = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                         capture_output=True, text=True, timeout=600, env={**_clean_env(), "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return {"sdist": sdist, "wheel": wheel, "strays": strays}


def test_the_sdist_holds_the_sources_and_nothing_a_run_leaves(dists):
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {"README.md", "pyproject.toml", "CHANGELOG.md", "Makefile", "mkdocs.yml", "tests/conftest.py",
              "tests/test_packaging.py", "docs/index.md", "docs/tutorials/solve_a_ufm.py", "benchmarks/metrics.py"}
    if (REPO / "LICENSE").is_file():
        wanted.add("LICENSE")
    assert wanted <= names, wanted - names
    assert {f"src/{m}" for m in SHIPPED} <= names  # every module of the package
    assert {f"tests/{p.name}" for p in (REPO / "tests").glob("*.py")} <= names  # the suite runs from it
    leaked = {n for n in names if "__pycache__" in n or n.endswith(".pyc")} | (set(dists["strays"]) & names)
    assert not leaked, leaked


def test_the_wheel_holds_the_package_only(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
    modules = sorted(n for n in names if n.endswith(".py"))
    assert modules == SHIPPED  # every module, no stale one, no test
    assert all(n.startswith(("nclab/", "nclab-")) for n in names), names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(dists["wheel"]) as whl:
        assert "nclab = nclab.cli:main" in whl.read(entry_points).decode()


# Imports every module of the installed package and prints those not loaded from `site`.
_IMPORT_ALL = """
import importlib, pkgutil, sys
import nclab
site = sys.argv[1]
names = ["nclab"] + sorted(m.name for m in pkgutil.walk_packages(nclab.__path__, "nclab."))
outside = []
for name in names:
    if name.rsplit(".", 1)[-1] == "__main__":  # importing it runs the command line
        continue
    module = importlib.import_module(name)
    if not module.__file__.startswith(site):
        outside.append(f"{name}: {module.__file__}")
print(len(names), "modules")
print("outside:", outside)
"""


@pytest.mark.timeout(300)
def test_the_wheel_in_a_fresh_venv_outside_the_checkout(dists, tmp_path):
    """A fresh venv gets the wheel (no index, no dependencies fetched) and the project venv's
    dependencies through a .pth line; the command and every module then come from that venv."""
    venv = tmp_path / "venv"
    env = _clean_env()
    # no pip of its own (ensurepip costs seconds): the running pip installs into it through --python
    res = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True,
                         timeout=180, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    python, nclab_cmd = venv / "bin" / "python", venv / "bin" / "nclab"
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, env=env).stdout.strip()
    assert fresh_site.startswith(str(venv)), fresh_site
    # torch, numpy, typer, ... from the environment running the tests (the venv of `make test`):
    # plain path lines, so that environment's own .pth files (its editable nclab) are not processed
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(fresh_site) / "nclab_test_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                          "--no-index", str(dists["wheel"])],
                         capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (Path(fresh_site) / "nclab" / "cli" / "__init__.py").is_file()
    assert not list(Path(fresh_site).glob("__editable__*"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*cmd):
        return subprocess.run([str(c) for c in cmd], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=120)

    res = run(nclab_cmd, "--help")  # the console script the wheel declares
    assert res.returncode == 0 and "Usage" in res.stdout and "landscape" in res.stdout, res.stdout + res.stderr
    res = run(nclab_cmd, "demo", "--help")
    assert res.returncode == 0 and "--out" in res.stdout, res.stdout + res.stderr
    res = run(python, "-c", _IMPORT_ALL, fresh_site)
    assert res.returncode == 0, res.stderr[-3000:]
    count, outside = res.stdout.splitlines()
    with zipfile.ZipFile(dists["wheel"]) as whl:
        in_wheel = [n for n in whl.namelist() if n.endswith(".py")]
    assert count == f"{len(in_wheel)} modules", (count, len(in_wheel))  # every module of the wheel was found
    assert outside == "outside: []", outside  # none from src/ or from the project venv's editable install


@pytest.mark.timeout(900)
def test_a_wheel_installed_outside_the_checkout_runs_bench_and_demo(dists, tmp_path):
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
         str(dists["wheel"])],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert not list(site.glob("__editable__*")) and (site / "nclab" / "benchmarks" / "metrics.py").is_file()
    packaged = {p.relative_to(site / "nclab").as_posix() for p in (site / "nclab").rglob("*.py")}
    shipped = {p.relative_to(REPO / "src" / "nclab").as_posix() for p in (REPO / "src" / "nclab").rglob("*.py")}
    assert packaged == shipped  # every module, and no stale one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # one intra-op thread, as each xdist worker has (conftest.py): on a 2-core machine at load ~16 the
    # demo ran past 300 s with torch's default threads and took 99 s with one
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

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
