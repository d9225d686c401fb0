"""The report of `nclab reproduce`: ``report.md`` and one self-contained ``report.html``.

Both are drawn from the dict :func:`nclab.reproduce.runner.reproduce` returns, in the same order:
a verdict table (target, claim, verdict, key number), then per target and per claim the statement
quoted with its source, the criterion, the measured summary, the evidence (numbers and tables), the
figures, the verdict with its reason and the wall time; last, the provenance and how to rerun.

``report.html`` is one page a reader can mail or archive: the figures (PNGs the targets wrote in
their folders) are embedded as base64 ``data:`` URIs, the style is inline CSS, there is no script
and no external URL of any kind; every text is escaped with :func:`html.escape`.  ``report.md``
links the figures by their path relative to the output folder.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from nclab.io import atomic_write

__all__ = ["key_number", "verdict_rows", "format_value", "render_markdown", "render_html", "write_report"]

_ORDER = ("passed", "failed", "not run")


def format_value(value: Any, digits: int = 4) -> str:
    """A cell of the report: floats with ``digits`` significant digits, None as "–", short lists
    inline, anything else as compact JSON (long values cut with "…")."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) or v is None for v in value):
        cells = [format_value(v, 3) for v in value[:12]]
        return "[" + ", ".join(cells) + (", …" if len(value) > 12 else "") + "]"
    text = json.dumps(value, default=str, separators=(", ", ": "))
    return text if len(text) <= 240 else text[:239] + "…"


def key_number(claim: dict) -> str:
    """The claim's key number for the verdict table: its ``headline`` when the target set one, else
    the first numeric entry of its evidence as ``name value``, else the reason (cut short)."""
    if claim.get("headline"):
        return str(claim["headline"])
    for name, value in (claim.get("evidence") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{name} {format_value(value, 3)}"
    reason = claim.get("reason") or ""
    return reason if len(reason) <= 40 else reason[:39] + "…"


def verdict_rows(result: dict) -> list[dict]:
    """One row per claim: ``target``, ``claim`` (its title), ``key``, ``verdict``, ``key_number``."""
    return [{"target": t["name"], "claim": c["title"], "key": c["key"], "verdict": c["verdict"],
             "key_number": key_number(c)} for t in result["targets"] for c in t["claims"]]


def _anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


def _rerun(prov: dict) -> str:
    return prov.get("command") or "nclab reproduce all"


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------
def _md_cell(value: Any) -> str:
    return format_value(value).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(result: dict) -> str:
    """``report.md``: the same content as the HTML page, figures linked by relative path."""
    prov, counts = result["provenance"], result["counts"]
    lines = ["# nclab reproduce: the papers' claims, checked", "",
             f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
             f"{counts.get('not run', 0)} not run; scale {prov['scale']}, seed {prov['seed']}, "
             f"{result['seconds']:.1f} s.", "", "## Verdicts", ""]
    lines += _md_table(["target", "claim", "verdict", "key number"],
                       [[r["target"], r["claim"], r["verdict"].upper(), r["key_number"]] for r in verdict_rows(result)])
    for t in result["targets"]:
        lines += [f"## {t['name']}: {t['title']}", ""]
        if t["citation"]:
            lines += [t["citation"], ""]
        lines += [f"Status: {t['status']}" + (f" ({t['reason']})" if t["reason"] else "")
                  + f"; {t['seconds']:.1f} s.", ""]
        for c in t["claims"]:
            lines += [f"### {c['title']} — {c['verdict'].upper()}", "",
                      f"> {c['statement']}", f"> — {c['source']}", "",
                      f"**Criterion.** {c['criterion']}", ""]
            if c["summary"]:
                lines += [f"**Measured.** {c['summary']}", ""]
            if c["reason"]:
                lines += [f"**Reason.** {c['reason']}", ""]
            numbers = {k: v for k, v in c["evidence"].items() if k != "traceback"}
            if numbers:
                lines += ["**Evidence.**", ""] + _md_table(["quantity", "value"], [[k, v] for k, v in numbers.items()])
            for table in c["tables"]:
                lines += [f"*{table['title']}*", ""] + _md_table(table["columns"], table["rows"])
            for fig in c["figures"]:
                lines += [f"![{fig['caption']}]({t['folder']}/{fig['path']})", "", f"*{fig['caption']}*", ""]
            if "traceback" in c["evidence"]:
                lines += ["```", str(c["evidence"]["traceback"]).rstrip(), "```", ""]
            lines += [f"Key `{c['key']}`; {c['seconds']:.2f} s.", ""]
    lines += ["## Provenance", ""] + _md_table(["", ""], [[k, v] for k, v in prov.items()])
    lines += ["Rerun:", "", "```", _rerun(prov), "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:62rem;margin:2rem auto;
padding:0 1rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.7rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.92rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
blockquote{margin:.5rem 0;padding:.4rem 1rem;border-left:4px solid #8aa4c8;background:#f5f8fc}
blockquote cite{display:block;font-size:.9rem;color:#444;margin-top:.3rem}
.v{display:inline-block;padding:.05rem .5rem;border-radius:.3rem;font-weight:bold;font-size:.85rem}
.v-passed{background:#d6f5d6;color:#135e13}.v-failed{background:#fbd3d3;color:#8b1010}
.v-not-run{background:#e6e6e6;color:#444}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9rem;color:#444}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.85rem}
nav ul{padding-left:1.2rem}.muted{color:#666;font-size:.9rem}.missing{color:#8b1010}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(verdict: str) -> str:
    return f'<span class="v v-{_anchor(verdict)}">{_e(verdict)}</span>'


def _html_table(columns: list[str], rows: list[list[Any]], title: str = "") -> str:
    def cell(v):
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f'<td class="num">{_e(format_value(v))}</td>' if numeric else f"<td>{_e(format_value(v))}</td>"

    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    caption = f"<caption>{_e(title)}</caption>" if title else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(folder: Path, fig: dict) -> str:
    """A figure embedded as a data URI; a file that is missing or not a PNG is said so, not shown."""
    path = folder / fig["path"]
    try:
        data = path.read_bytes()
    except OSError as err:
        return f'<p class="missing">figure {_e(fig["path"])} could not be read ({_e(err.strerror or err)})</p>'
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return f'<p class="missing">figure {_e(fig["path"])} is not a PNG file</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{_e(fig["caption"])}">'
            f"<figcaption>{_e(fig['caption'])}</figcaption></figure>")


def render_html(result: dict, out) -> str:
    """``report.html`` as a string (figures read from ``out/<target>/``)."""
    out = Path(out)
    prov, counts = result["provenance"], result["counts"]
    toc = ['<li><a href="#verdicts">Verdicts</a></li>']
    for t in result["targets"]:
        items = "".join(f'<li><a href="#c-{_anchor(c["key"])}">{_e(c["title"])}</a> {_badge(c["verdict"])}</li>'
                        for c in t["claims"])
        toc.append(f'<li><a href="#t-{_anchor(t["name"])}">{_e(t["name"])}: {_e(t["title"])}</a><ul>{items}</ul></li>')
    toc.append('<li><a href="#provenance">Provenance and how to rerun</a></li>')

    verdicts = ["<table><thead><tr><th>target</th><th>claim</th><th>verdict</th><th>key number</th></tr></thead><tbody>"]
    for r in verdict_rows(result):
        verdicts.append(f'<tr><td>{_e(r["target"])}</td><td><a href="#c-{_anchor(r["key"])}">{_e(r["claim"])}</a></td>'
                        f"<td>{_badge(r['verdict'])}</td><td>{_e(r['key_number'])}</td></tr>")
    verdicts.append("</tbody></table>")

    sections = []
    for t in result["targets"]:
        part = [f'<section id="t-{_anchor(t["name"])}"><h2>{_e(t["name"])}: {_e(t["title"])}</h2>']
        if t["citation"]:
            part.append(f'<p class="muted">{_e(t["citation"])}</p>')
        part.append(f'<p class="muted">status {_e(t["status"])}'
                    + (f": {_e(t['reason'])}" if t["reason"] else "") + f"; {t['seconds']:.1f} s</p>")
        for c in t["claims"]:
            part.append(f'<article id="c-{_anchor(c["key"])}"><h3>{_e(c["title"])} {_badge(c["verdict"])}</h3>')
            part.append(f"<blockquote>{_e(c['statement'])}<cite>{_e(c['source'])}</cite></blockquote>")
            part.append(f"<p><strong>Criterion.</strong> {_e(c['criterion'])}</p>")
            if c["summary"]:
                part.append(f"<p><strong>Measured.</strong> {_e(c['summary'])}</p>")
            part.append(f"<p><strong>Verdict.</strong> {_badge(c['verdict'])}"
                        + (f" {_e(c['reason'])}" if c["reason"] else "") + "</p>")
            numbers = {k: v for k, v in c["evidence"].items() if k != "traceback"}
            if numbers:
                part.append(_html_table(["quantity", "value"], [[k, v] for k, v in numbers.items()], "evidence"))
            for table in c["tables"]:
                part.append(_html_table(table["columns"], table["rows"], table["title"]))
            part += [_figure(out / t["folder"], fig) for fig in c["figures"]]
            if "traceback" in c["evidence"]:
                part.append(f"<pre>{_e(c['evidence']['traceback'])}</pre>")
            part.append(f'<p class="muted">key {_e(c["key"])}; {c["seconds"]:.2f} s</p></article>')
        part.append("</section>")
        sections.append("".join(part))

    provenance = _html_table(["", ""], [[k, v] for k, v in prov.items()])
    summary = (f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
               f"{counts.get('not run', 0)} not run; scale {prov['scale']}, seed {prov['seed']}, "
               f"{result['seconds']:.1f} s")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>nclab reproduce: report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>nclab reproduce: the papers' claims, checked</h1>",
        f"<p>{_e(summary)}</p>",
        f"<nav><h2>Contents</h2><ul>{''.join(toc)}</ul></nav>",
        f'<section id="verdicts"><h2>Verdicts</h2>{"".join(verdicts)}</section>',
        *sections,
        f'<section id="provenance"><h2>Provenance and how to rerun</h2>{provenance}',
        "<p>Rerun (the same seed gives the same numbers up to floating-point differences between "
        "machines and library versions):</p>",
        f"<pre>{_e(_rerun(prov))}</pre></section>",
        "</body></html>",
        "",
    ])


def write_report(result: dict, out) -> dict[str, Path]:
    """Write ``out/report.md`` and ``out/report.html`` atomically; returns their paths."""
    out = Path(out)
    md = atomic_write(out / "report.md", render_markdown(result).encode())
    page = atomic_write(out / "report.html", render_html(result, out).encode())
    return {"md": md, "html": page}
