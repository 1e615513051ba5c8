"""Open a report in a real headless Chromium (Debian's, driven by Playwright) and say what it saw."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# this machine's network is closed: Chromium's own background traffic would only fail noisily
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def why_no_browser() -> str | None:
    """None when the browser tests can run; otherwise the reason they skip."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (tests/run.sh installs it: pip install -e '.[dev]')"
    if not Path(CHROMIUM).is_file():
        return "Debian's chromium is not installed (tests/run.sh installs it with apt-get when run as root)"
    return None


@dataclass
class Seen:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # src prefix, naturalWidth, complete
    title: str = ""
    screenshot: np.ndarray | None = None


def open_report(html: Path, screenshot: Path) -> Seen:
    from playwright.sync_api import sync_playwright

    seen = Seen()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
        page.on("request", lambda r: seen.requests.append(r.url))
        page.goto(html.resolve().as_uri(), wait_until="load")
        seen.title = page.title()
        seen.images = page.evaluate(
            "Array.from(document.images).map(i => ({src: i.src.slice(0, 22), width: i.naturalWidth, complete: i.complete}))")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    import cv2

    seen.screenshot = cv2.imread(str(screenshot))
    return seen
