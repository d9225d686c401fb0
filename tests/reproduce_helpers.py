"""Checks of `nclab reproduce`'s HTML report shared by its test modules: self-containment (parsed)
and rendering in a real headless Chromium through selenium."""

from __future__ import annotations

import base64
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Screenshots are also copied here (the path is printed), so a person can look at them after the run.
SHOTS = Path(os.environ.get("NCLAB_SCREENSHOTS", "/tmp/nclab-report-screenshots"))


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_self_contained(page: str) -> list[dict]:
    """Parse ``page``: no script, no external stylesheet, no URL of any kind outside ``data:`` and
    in-page anchors; every <img> a PNG data URI that decodes to a PNG. Returns the images' attrs."""
    parser = _Collector()
    parser.feed(page)
    images = []
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            value = (attrs.get(name) or "").strip()
            if not value:
                continue
            low = value.lower()
            assert not low.startswith(("http:", "https:", "//", "ftp:", "file:")), (tag, name, value[:80])
            assert low.startswith(("data:", "#")), (tag, name, value[:80])
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,"), src[:60]
            assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
            images.append(attrs)
    assert "url(" not in page.lower()  # no CSS url() either
    assert "@import" not in page.lower()
    return images


def chromium_or_skip():
    """Skip (with the reason) when Chromium or its driver is missing, unless CI is set: then fail."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = "the browser check needs " + ", ".join(missing) + " (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def render_in_chromium(html_path: Path, tmp_path: Path, name: str) -> dict:
    """Open ``html_path`` in headless Chromium; return the SEVERE console entries, the images
    (complete, naturalWidth) and the screenshot's paths (under tmp_path and under :data:`SHOTS`)."""
    chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(html_path.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, "
            "alt: i.alt}));")
        texts = driver.execute_script("return document.body.innerText;")
        scripts = driver.execute_script("return document.scripts.length;")
        logs = driver.get_log("browser")
        shot = tmp_path / f"{name}.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    SHOTS.mkdir(parents=True, exist_ok=True)
    kept = SHOTS / f"{name}.png"
    shutil.copyfile(shot, kept)
    print(f"screenshot of {html_path}: {kept}")
    return {"severe": [e for e in logs if e.get("level") == "SEVERE"], "images": images, "text": texts,
            "scripts": scripts, "screenshot": shot, "kept": kept}
