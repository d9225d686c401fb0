"""nclab.reproduce.report on a hand-made result: escaping, self-containment, missing figures, the
verdict table's key numbers, and the page rendered in headless Chromium."""

from __future__ import annotations

import io
import json

import pytest

from nclab.reproduce.claims import Claim, Figure, Table
from nclab.reproduce.report import key_number, render_markdown, verdict_rows, write_report
from reproduce_helpers import assert_self_contained, render_in_chromium

HOSTILE = '<script>alert("x")</script> & <img src="http://example.com/a.png">'


def _png(path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(2, 1.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([1, 2, 3], [1, 4, 9])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def _result(out):
    _png(out / "fake" / "fig.png")
    (out / "fake" / "notpng.png").write_bytes(b"GIF89a not a png")
    claims = [
        Claim(key="fake.one", title="a claim that holds", source="Someone 2020, Theorem 1", statement=HOSTILE,
              criterion="x < 1", verdict="passed", summary="x = 0.5", evidence={"x": 0.5, "runs": 3},
              tables=[Table("runs", ["seed", "x"], [[0, 0.5], [1, None]])],
              figures=[Figure("fig.png", "a figure"), Figure("missing.png", "gone"), Figure("notpng.png", "bad")],
              headline="x 0.5"),
        Claim(key="fake.two", title="a claim that fails", source="Someone 2020, Theorem 2", statement="s",
              criterion="y < 1", verdict="failed", summary="y = 2", evidence={"flag": True, "y": 2.0,
                                                                              "traceback": "Traceback: boom"},
              reason="y = 2 > 1"),
        Claim(key="fake.three", title="needs a GPU", source="Someone 2020, Section 5", statement="s",
              criterion="c", verdict="not run", reason="no GPU on this machine"),
    ]
    return {
        "provenance": {"command": "nclab reproduce all --out x --quick", "scale": "quick", "seed": 0, "nclab": "0.1.0"},
        "targets": [{"name": "fake", "title": "A fake paper", "citation": "Someone, 2020", "status": "ran",
                     "reason": "", "seconds": 1.0, "folder": "fake", "claims": [c.to_dict() for c in claims]}],
        "counts": {"passed": 1, "failed": 1, "not run": 1}, "ok": False, "seconds": 1.5,
    }


def test_key_numbers_and_verdict_rows(tmp_path):
    result = _result(tmp_path)
    rows = verdict_rows(result)
    assert [r["verdict"] for r in rows] == ["passed", "failed", "not run"]
    assert [r["key_number"] for r in rows] == ["x 0.5", "y 2", "no GPU on this machine"]  # bools skipped
    assert key_number({"evidence": {}, "reason": "r" * 100})[-1] == "…"


def test_html_is_self_contained_escaped_and_complete(tmp_path):
    result = _result(tmp_path)
    paths = write_report(result, tmp_path)
    page = paths["html"].read_text()
    images = assert_self_contained(page)
    assert len(images) == 1 and images[0]["alt"] == "a figure"
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "figure missing.png could not be read" in page and "figure notpng.png is not a PNG file" in page
    for text in ("Contents", "Verdicts", "Someone 2020, Theorem 1", "Criterion.", "Measured.", "y = 2 &gt; 1",
                 "no GPU on this machine", "Provenance and how to rerun", "nclab reproduce all --out x --quick",
                 "Traceback: boom", 'class="v v-not-run"', 'href="#c-fake.two"', 'id="c-fake.two"'):
        assert text in page, text
    md = paths["md"].read_text()
    assert md == render_markdown(result)
    assert "![a figure](fake/fig.png)" in md and "| fake | a claim that fails | FAILED | y 2 |" in md
    assert "Someone 2020, Theorem 1" in md and "nclab reproduce all --out x --quick" in md


def test_html_renders_in_headless_chromium(tmp_path):
    paths = write_report(_result(tmp_path), tmp_path)
    seen = render_in_chromium(paths["html"], tmp_path, "report-synthetic")
    assert seen["severe"] == [], seen["severe"]
    assert seen["scripts"] == 0  # the hostile statement stayed text
    assert seen["images"] and all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert HOSTILE.split(">")[0] in seen["text"]
    assert seen["screenshot"].stat().st_size > 1000 and seen["kept"].exists()


def test_claims_round_trip_through_json(tmp_path):
    result = _result(tmp_path)
    for data in result["targets"][0]["claims"]:
        again = Claim.from_dict(json.loads(json.dumps(data)))
        assert again.to_dict() == data
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim(key="k", title="t", source="s", statement="s", criterion="c", verdict="maybe")
