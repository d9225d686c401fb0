"""Layering: the library of nclab.nets computes, the command line presents.  Importing any nets
module except plot.py (the figures, which the app layer will take over) loads neither rich nor
matplotlib; checked in a fresh interpreter, so that nothing imported by other tests hides it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nclab

NETS = Path(nclab.__file__).parent / "nets"
MODULES = sorted(f"nclab.nets.{p.stem}" for p in NETS.glob("*.py") if p.stem not in ("__init__", "plot"))


def test_every_module_is_listed():
    assert {"nclab.nets.train", "nclab.nets.config", "nclab.nets.distributed", "nclab.nets.evaluate",
            "nclab.nets.rundir", "nclab.nets.reproduce", "nclab.nets.heads"} <= set(MODULES)


def test_no_presentation_imports():
    # one interpreter for all (torch takes seconds to import); checked after each import, so a
    # failure names the module that pulled rich or matplotlib in
    code = ("import importlib, sys\n"
            f"for name in {MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'matplotlib'))\n"
            "    assert not bad, (name, bad[:5])\n"
            "print('ok', len(sys.modules))")
    src = str(Path(nclab.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok")
