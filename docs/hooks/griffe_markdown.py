"""Griffe extension: nclab's reST/numpy-style docstrings rendered as Markdown, in memory.

nclab's docstrings are written for a reader of the source (and for doctest): reST roles
(``:func:`simplex_etf```), reST simple tables, numpy section headers whose items read
``name : what it is`` (prose, not a type), ``term`` lines followed by an indented definition, and
``>>>`` examples.  mkdocstrings renders docstrings as Markdown, where these would become setext
headings, reference links (``r["a"]["b"]``) and run-on paragraphs.  This extension rewrites each
docstring's text once, after nclab is loaded and before anything parses it; the source files are
not touched.  mkdocs.yml sets ``docstring_style: null``, so the whole text is one Markdown section
and griffe has no section grammar to warn about.

Rewrites, in this order (each works on lines, outside fenced blocks):

1. ``>>>`` blocks (up to the next blank line) -> fenced ``pycon`` code.
2. reST simple tables (``===  ===`` borders) -> Markdown tables (a row whose first column is blank
   continues the previous row).
3. ``Title`` over a ``-----`` underline -> a bold paragraph ``**Title**``.
4. Items: a line ``name : text`` in a section, or a ``term`` line followed by lines indented by
   4 or more -> a list item (``- name: text``), its indented lines continued under it.
5. A ``*`` outside code that is not part of an intended ``*emphasis*`` (the ``m*`` of a formula)
   is escaped, so two of them do not turn the text between into italics.
6. reST roles (``:func:``, ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``, ``:exc:``,
   ``:obj:``) -> an optional autorefs cross-reference: a link when the target is documented on
   the site, plain code otherwise (never a warning).
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
HEADER_RULE = re.compile(r"^(-{3,}|={3,}|~{3,})\s*$")
TABLE_RULE = re.compile(r"^=+( +=+)+\s*$")
ITEM = re.compile(r"^(?P<name>[*\w][\w*,.\[\] ]*?|``[^`]+``(?:, ``[^`]+``)*) : (?P<text>.*)$")
LIST_START = re.compile(r"^(\*|-|\d+\.|#\.)\s")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _fence_doctests(lines: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            pad = " " * _indent(line)
            if out and out[-1].strip():
                out.append("")
            out.append(pad + "```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(pad + "```")
            continue
        out.append(line)
        i += 1
    return out


def _cells(line: str, starts: list[int]) -> list[str]:
    """Cut a row at the column starts; a word running over a boundary stays in its cell."""
    cuts = []
    for s in starts[1:]:
        s = max(s, cuts[-1] if cuts else 0)
        while 0 < s < len(line) and line[s - 1] != " " and line[s] != " ":
            s += 1
        cuts.append(s)
    bounds = [0, *cuts, len(line)]
    return [line[a:b].strip() for a, b in zip(bounds, bounds[1:])]


def _tables(lines: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(lines):
        if not TABLE_RULE.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        rule = lines[i]
        starts = [m.start() for m in re.finditer(r"=+", rule)]
        j = i + 1
        blocks: list[list[list[str]]] = [[]]
        while j < len(lines) and lines[j].strip():
            if TABLE_RULE.match(lines[j]):
                blocks.append([])
            else:
                cells = _cells(lines[j], starts)
                if blocks[-1] and not cells[0]:
                    prev = blocks[-1][-1]
                    blocks[-1][-1] = [" ".join(filter(None, (a, b))) for a, b in zip(prev, cells)]
                else:
                    blocks[-1].append(cells)
            j += 1
        blocks = [b for b in blocks if b]
        header, body = (blocks[0], [r for b in blocks[1:] for r in b]) if len(blocks) > 1 else (None, blocks[0] if blocks else [])

        def row(cells):
            return "| " + " | ".join(_escape_pipes(c) for c in cells) + " |"

        if out and out[-1].strip():
            out.append("")
        out.append(row(header[0]) if header else row([""] * len(starts)))
        out.extend(row(r) for r in (header or [])[1:])
        out.append("|" + "|".join("---" for _ in starts) + "|")
        out.extend(row(r) for r in body)
        out.append("")
        i = j
    return out


def _escape_pipes(cell: str) -> str:
    """A table cell's ``|`` escaped, except inside code spans (where Markdown keeps them anyway)."""
    out, pos = [], 0
    for code in CODE_SPAN.finditer(cell):
        out += [cell[pos:code.start()].replace("|", "\\|"), code.group(0)]
        pos = code.end()
    return "".join(out) + cell[pos:].replace("|", "\\|")


def _sections_and_items(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_section = False
    in_item = False
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and HEADER_RULE.match(nxt.strip()) and _indent(nxt) == _indent(line) and not line.lstrip().startswith("|"):
            if out and out[-1].strip():
                out.append("")
            out.append(" " * _indent(line) + f"**{line.strip()}**")
            out.append("")
            in_section, in_item = True, False
            i += 2
            continue
        if line.lstrip().startswith(("```", "|")):
            in_item = False
            out.append(line)
            i += 1
            continue
        stripped = line.strip()
        base = _indent(line) == 0
        is_item = False
        if base and stripped and not LIST_START.match(stripped):
            m = ITEM.match(stripped)
            prev_blank = not out or not out[-1].strip() or in_item
            if m and in_section:
                name, text = m["name"], m["text"]
                is_item = True
            elif prev_blank and _indent(nxt) >= 4 and nxt.strip() and len(stripped) < 80:
                name, text = stripped, ""
                is_item = True
        if is_item:
            if not in_item and out and out[-1].strip():
                out.append("")
            label = name if "`" in name or ":" in name else f"`{name}`"
            out.append(f"- {label}" + (f": {text}" if text else ""))
            in_item = True
        elif in_item and stripped and (_indent(line) > 0 or out[-1].strip()):
            out.append("    " + stripped)
        else:
            if not stripped:
                in_item = False
            elif in_item:
                in_item = False
            out.append(line)
        i += 1
    return out


def _target(obj: griffe.Object, name: str) -> str | None:
    if name.startswith("."):  # relative module, as in a package's table of contents
        module = obj if obj.is_module else obj.module
        return f"{module.path}{name}"
    for scope in (obj, *_parents(obj)):
        try:
            return scope.resolve(name)
        except Exception:  # noqa: BLE001 - griffe's NameResolutionError and lookups on odd scopes
            continue
    return name if name.startswith("nclab.") else None


def _parents(obj):
    while obj.parent is not None:
        obj = obj.parent
        yield obj


def _roles(text: str, obj: griffe.Object) -> str:
    def repl(m: re.Match) -> str:
        role, tilde, name = m.groups()
        shown = name.rsplit(".", 1)[-1] if tilde else name.lstrip(".")
        if role in ("func", "meth"):
            shown += "()"
        target = _target(obj, name.lstrip("~"))
        code = f"<code>{html.escape(shown)}</code>"
        if not target:
            return code
        return f'<autoref identifier="{html.escape(target)}" optional>{code}</autoref>'

    return ROLE.sub(repl, text)


CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
EMPHASIS = re.compile(r"\*\*(?=\S).+?(?<=\S)\*\*|(?<![\w*])\*(?=\w)[^*]+?(?<=\w)\*(?![\w*])")


def _escape_stars(line: str) -> str:
    """Escape every ``*`` of a formula (``m*``, ``rho*|``, ``2 * x``) so that Markdown does not read
    two of them as emphasis; intended ``*word*``, ``**bold**``, list bullets and code stay."""
    bullet = re.match(r"^\s*\* ", line)
    head, line = (line[: bullet.end()], line[bullet.end():]) if bullet else ("", line)
    out, pos = [], 0
    for code in CODE_SPAN.finditer(line):
        out.append(_escape_outside_emphasis(line[pos:code.start()]))
        out.append(code.group(0))
        pos = code.end()
    out.append(_escape_outside_emphasis(line[pos:]))
    return head + "".join(out)


def _escape_outside_emphasis(text: str) -> str:
    out, pos = [], 0
    for em in EMPHASIS.finditer(text):
        out.append(text[pos:em.start()].replace("*", "\\*"))
        out.append(em.group(0))
        pos = em.end()
    out.append(text[pos:].replace("*", "\\*"))
    return "".join(out)


def _indented_code(lines: list[str]) -> list[bool]:
    """Which lines Markdown reads as an indented code block (4 spaces past the enclosing list's
    content, after a blank line or more code)."""
    flags, in_list, prev_blank, prev_code = [], False, True, False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            flags.append(prev_code)
            prev_blank = True
            continue
        indent = _indent(line)
        if indent == 0 and LIST_START.match(stripped):
            in_list = True
        elif indent == 0 and prev_blank:
            in_list = False
        code = indent >= (8 if in_list else 4) and (prev_blank or prev_code)
        flags.append(code)
        prev_blank, prev_code = False, code
    return flags


def _split_fences(lines: list[str]):
    """Alternate runs of (text lines, fenced-code lines), so rewrites skip code."""
    run, fenced, inside = [], [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            if inside:
                run.append(line)
                fenced.append((True, run))
                run, inside = [], False
                continue
            if run:
                fenced.append((False, run))
            run, inside = [line], True
            continue
        run.append(line)
    if run:
        fenced.append((inside, run))
    return fenced


def to_markdown(text: str, obj: griffe.Object) -> str:
    """The Markdown form of one nclab docstring (see the module docstring for the rewrites)."""
    lines = _fence_doctests(text.splitlines())
    out: list[str] = []
    for is_code, run in _split_fences(lines):
        if is_code:
            out.extend(run)
        else:
            converted = _sections_and_items(_tables(run))
            out.extend(_roles(line if code else _escape_stars(line), obj)
                       for line, code in zip(converted, _indented_code(converted)))
    return "\n".join(out)


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)


class NclabDocstrings(griffe.Extension):
    """Rewrite every docstring of the nclab package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != "nclab":
            return
        for obj in _walk(pkg):
            if obj.docstring is not None and not getattr(obj.docstring, "_nclab_markdown", False):
                obj.docstring.value = to_markdown(obj.docstring.value, obj)
                obj.docstring._nclab_markdown = True
