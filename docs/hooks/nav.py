"""mkdocs hook: the navigation in reading order, and the folders' titles.

The site has no ``nav:`` in mkdocs.yml, so mkdocs builds the navigation from the docs/ tree and a
new page is one new file.  This hook only orders it: the top level as home, getting started,
tutorials, API reference, then anything else; inside a folder, pages with an ``order: N`` line in
their front matter first (by N), the others after them in name order.  It also titles the folders.
"""

from __future__ import annotations

import re

TITLES = {"api": "API reference", "tutorials": "Tutorials"}
ORDER = ["index.md", "getting-started.md", "tutorials", "api"]
FRONT_ORDER = re.compile(r"\A---\s*\n(?:.*\n)*?order:\s*(\d+)\s*\n(?:.*\n)*?---\s*\n")


def _first_file(item):
    """The first page under a navigation item (a page or a section), or None."""
    if getattr(item, "file", None) is not None:
        return item.file
    for child in getattr(item, "children", None) or []:
        found = _first_file(child)
        if found is not None:
            return found
    return None


def _top(item) -> str:
    """The top-level docs/ entry an item comes from: a file name or a folder name."""
    file = _first_file(item)
    return file.src_uri.split("/")[0] if file is not None else ""


def _front_order(item) -> int:
    file = getattr(item, "file", None)
    if file is None or not file.src_uri.endswith(".md"):
        return 10**6
    with open(file.abs_src_path, encoding="utf-8") as f:
        match = FRONT_ORDER.match(f.read(2000))
    return int(match.group(1)) if match else 10**6


def on_nav(nav, config, files):
    items = sorted(nav.items, key=lambda i: (ORDER.index(_top(i)) if _top(i) in ORDER else len(ORDER), _top(i)))
    for item in items:
        if item.is_section:
            if _top(item) in TITLES:
                item.title = TITLES[_top(item)]
            item.children.sort(key=_front_order)  # stable: name order among equals
    nav.items[:] = items
    # mkdocs linked each page to its neighbours before this hook: link them again in the new order
    nav.pages[:] = list(_pages(nav.items))
    for prev, page in zip([None, *nav.pages], nav.pages):
        page.previous_page = prev
        if prev is not None:
            prev.next_page = page
    if nav.pages:
        nav.pages[-1].next_page = None
    return nav


def _pages(items):
    for item in items:
        if item.is_page:
            yield item
        elif item.is_section:
            yield from _pages(item.children)
