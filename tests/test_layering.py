"""The layering of the package: the library computes, only the application layer prints or plots.

Library modules (everything but ``nclab.cli``, ``nclab.benchmarks``, ``nclab.reproduce`` -- which
writes figures and reports -- and ``nclab.__main__``) must
import neither rich, nor typer, nor matplotlib: a researcher who imports nclab in a notebook or a
cluster job gets results, not terminal output.  Checked in a fresh interpreter that imports every
library module and then looks at ``sys.modules``.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import nclab

SRC = Path(__file__).resolve().parents[1] / "src"
APP = ("nclab.cli", "nclab.benchmarks", "nclab.reproduce", "nclab.__main__")
PRESENTATION = ("rich", "typer", "matplotlib")
FRAMEWORKS = ("lightning.pytorch", "transformers")  # third-party integrations nclab.integrations wraps


def library_modules() -> list[str]:
    names = ["nclab"]
    for info in pkgutil.walk_packages(nclab.__path__, "nclab."):
        if not info.name.startswith(APP):
            names.append(info.name)
    return sorted(names)


def test_the_library_has_the_expected_modules():
    mods = library_modules()
    for expected in ("nclab.geometry", "nclab.io", "nclab._validation", "nclab.ufm.run", "nclab.nets.train"):
        assert expected in mods
    assert not [m for m in mods if m.startswith(APP)]


def test_no_library_module_imports_rich_typer_or_matplotlib():
    # Lightning and transformers import matplotlib / rich themselves: import them first and count
    # only what nclab's own modules add.
    code = (
        "import importlib, sys\n"
        f"for name in {FRAMEWORKS!r}:\n"
        "    importlib.import_module(name)\n"
        f"before = {{m for m in sys.modules if m.split('.')[0] in {PRESENTATION!r}}}\n"
        f"for name in {library_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {PRESENTATION!r} and m not in before)\n"
        "print(bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]", f"presentation packages imported by the library: {res.stdout}"


def test_no_library_source_imports_them_even_lazily():
    """A lazy ``import rich`` inside a function still prints from the library: scan every import
    statement of every library module, nested ones included."""
    import ast
    import importlib.util

    offenders = []
    for name in library_modules():
        path = importlib.util.find_spec(name).origin
        tree = ast.parse(Path(path).read_text(), filename=path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            offenders += [f"{name}:{node.lineno} imports {r}" for r in roots if r in PRESENTATION]
    assert not offenders, offenders
