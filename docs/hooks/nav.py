"""mkdocs hook: the top level of the navigation in reading order, and the folders' titles.

The site has no ``nav:`` in mkdocs.yml, so mkdocs builds the navigation from the docs/ tree and a
new page is one new file.  This hook only reorders the top level (home, getting started,
tutorials, API reference, then anything else in name order) and titles the folders.
"""

from __future__ import annotations

TITLES = {"api": "API reference", "tutorials": "Tutorials"}
ORDER = ["index.md", "getting-started.md", "tutorials", "api"]


def _first_file(item):
    """The source path of the first page under a navigation item (a page or a section)."""
    if getattr(item, "file", None) is not None:
        return item.file.src_uri
    for child in getattr(item, "children", None) or []:
        found = _first_file(child)
        if found:
            return found
    return None


def _top(item) -> str:
    """The top-level docs/ entry an item comes from: a file name or a folder name."""
    return (_first_file(item) or "").split("/")[0]


def on_nav(nav, config, files):
    items = sorted(nav.items, key=lambda i: (ORDER.index(_top(i)) if _top(i) in ORDER else len(ORDER), _top(i)))
    for item in items:
        if item.is_section and _top(item) in TITLES:
            item.title = TITLES[_top(item)]
    nav.items[:] = items
    return nav
