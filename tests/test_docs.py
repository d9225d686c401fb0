"""The documentation site: it builds with warnings as errors, and what it shows runs.

Tutorials are scripts, ``docs/tutorials/<name>.py``, each shown on its page ``<name>.md`` through a
snippet include (``--8<-- "docs/tutorials/<name>.py"``), so the page is the tested code.  A script
states what it prints in comment lines ``# expect: <regular expression>``; every one must match a
line of its output (``re.search``), and the page's printed output must show it too.  A new
tutorial needs nothing here: it is picked up by the glob.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))
EXPECT = re.compile(r"^# expect: (.+)$", re.M)


def _expectations(script: Path) -> list[str]:
    return EXPECT.findall(script.read_text())


def _env() -> dict:
    src = str(REPO / "src")
    old = os.environ.get("PYTHONPATH")
    # one intra-op thread, as every xdist worker of the suite has (conftest.py)
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + old if old else ""), "OMP_NUM_THREADS": "1"}


def test_there_are_tutorials_and_each_has_its_page():
    assert {p.stem for p in TUTORIALS} >= {"solve_a_ufm", "classify_a_critical_point"}
    for script in TUTORIALS:
        page = script.with_suffix(".md")
        assert page.is_file(), f"{script.name} has no page {page.name}"
        include = f'--8<-- "docs/tutorials/{script.name}"'
        assert include in page.read_text(), f"{page.name} does not include its script ({include})"
        assert _expectations(script), f"{script.name} states no '# expect: REGEX' line"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_prints_what_it_claims(script, tmp_path):
    # run from another folder so that a script relying on the checkout's working directory fails
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=280)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    for pattern in _expectations(script):
        assert re.search(pattern, res.stdout, re.M), f"{script.name}: no output line matches {pattern!r}:\n{res.stdout}"
    page = script.with_suffix(".md").read_text()
    for pattern in _expectations(script):
        assert re.search(pattern, page, re.M), f"{script.stem}.md shows no output line matching {pattern!r}"


def test_every_python_block_of_the_pages_runs():
    """The pages' own examples (tutorial scripts are run above; their includes are skipped)."""
    ran = 0
    for page in sorted(DOCS.rglob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            if block.lstrip().startswith("--8<--"):
                continue
            exec(compile(block, str(page), "exec"), {})  # noqa: S102 - our own documentation
            ran += 1
    assert ran >= 3


def test_every_public_module_has_an_api_page():
    """Each module the site documents is named on exactly one page, and each page's target imports."""
    pages = sorted((DOCS / "api").glob("*.md"))
    targets = [t for p in pages for t in re.findall(r"^::: ([\w.]+)", p.read_text(), re.M)]
    assert len(targets) == len(set(targets)), targets
    required = {"nclab.geometry", "nclab.metrics", "nclab.ufm.problems", "nclab.ufm.optim", "nclab.ufm.run",
                "nclab.ufm.landscape", "nclab.manifolds", "nclab.io", "nclab.nets.config", "nclab.nets.train",
                "nclab.nets.heads", "nclab.nets.evaluate", "nclab.nets.data", "nclab.track",
                "nclab.integrations.lightning", "nclab.integrations.hf", "nclab.sweep"}
    assert required <= set(targets), required - set(targets)


@pytest.mark.timeout(180)
def test_the_site_builds_strict_and_offline(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install 'nclab[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                         cwd=REPO, env={**_env(), "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                         timeout=170)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # nothing is fetched when the site is read: no web fonts, no external scripts or style sheets
    for page in site.rglob("*.html"):
        remote = re.findall(r'<(?:script|link)[^>]*(?:src|href)="(?:https?:)?//[^"]*"', page.read_text())
        assert not remote, (page.name, remote)
    for page in ["getting-started", "api/metrics", "api/ufm_problems"] + [
            f"tutorials/{p.stem}" for p in TUTORIALS]:
        assert (site / f"{page}.html").is_file(), page
    # the API pages are the docstrings, converted: formulas and examples are there, reST is not
    metrics = (site / "api" / "metrics.html").read_text()
    assert "compute_metrics" in metrics and "Tr(Sigma_W Sigma_B^+)" in metrics
    api = "".join(p.read_text() for p in (site / "api").rglob("*.html"))
    assert ":func:`" not in api and ":class:`" not in api and "=====" not in api
    assert 'class="autorefs autorefs-internal"' in api  # roles became links
    # the tutorial pages show the tested scripts themselves
    for script in TUTORIALS:
        html = (site / "tutorials" / f"{script.stem}.html").read_text()
        first_code_line = next(line for line in script.read_text().splitlines()
                               if line.startswith(("import ", "from ")))
        words = re.findall(r"\w+", first_code_line)
        assert all(w in html for w in words), (script.name, first_code_line)


def test_the_docstring_converter_on_each_construct():
    """docs/hooks/griffe_markdown.py: reST tables, sections, items, doctests and roles -> Markdown."""
    griffe = pytest.importorskip("griffe")
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_markdown", DOCS / "hooks" / "griffe_markdown.py")
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    module = griffe.Module("demo")
    text = "\n".join([
        "Summary with :func:`~nclab.geometry.simplex_etf` and m* = log(1/beta) and m* again.",
        "",
        "=========  ======================",
        "name       what",
        "=========  ======================",
        "``a|b``    first row, |x|, which",
        "           continues here",
        "=========  ======================",
        "",
        "Parameters",
        "----------",
        "K : classes (>= 2).",
        "tau : temperature,",
        "    positive.",
        "",
        "Example",
        "-------",
        ">>> r['a']['b']",
        "1",
    ])
    md = conv.to_markdown(text, module)
    assert '<autoref identifier="nclab.geometry.simplex_etf" optional><code>simplex_etf()</code></autoref>' in md
    assert "m\\* = log(1/beta) and m\\* again" in md  # no italics between the two stars
    assert "| name | what |\n|---|---|\n| ``a|b`` | first row, \\|x\\|, which continues here |" in md
    assert "**Parameters**" in md and "- `K`: classes (>= 2)." in md and "- `tau`: temperature,\n    positive." in md
    assert "**Example**" in md and "```pycon\n>>> r['a']['b']\n1\n```" in md
    assert "----" not in md and ":func:" not in md
