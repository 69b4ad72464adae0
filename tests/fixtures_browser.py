"""Test helpers for the docs-site browser test: build the site, serve it on loopback, launch Debian's chromium through
Playwright, list the nav's pages and watch each page for console errors, failed or off-loopback requests.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import REPO

__all__ = [
    "NavPage",
    "PageWatch",
    "artefacts_dir",
    "built_file",
    "chromium_path",
    "nav_pages",
    "notebook_image_outputs",
    "page_text",
    "search_word",
    "serve",
]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class NavPage:
    """One nav entry: its title, its source under docs/ and its URL path relative to the site root."""

    title: str
    src: str
    path: str

    @property
    def is_notebook(self) -> bool:
        return self.src.endswith(".ipynb")


@dataclass
class PageWatch:
    """What went wrong while one page loaded: console errors, page errors, failed and off-loopback requests."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    off_loopback: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        """Collect from a Playwright page (console errors, uncaught exceptions, network failures, HTTP >= 400)."""
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(f"{m.text} @ {m.location}"))
        page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.failed_requests.append(f"{r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.failed_requests.append(f"{r.url} (HTTP {r.status})"))

    def route(self, route) -> None:
        """Context route handler: off-loopback requests are recorded and aborted at once (the sandbox has no
        internet, so waiting on them would only hang); everything else goes through untouched."""
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname not in LOOPBACK:
            self.off_loopback.append(url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    def problems(self) -> list[str]:
        """Each problem once: the failed request and console line that an aborted off-loopback request causes
        are left out (the off-loopback request itself is the problem)."""
        caused = tuple(self.off_loopback)
        return (
            [f"off-loopback request: {u}" for u in self.off_loopback]
            + [f"failed request: {u}" for u in self.failed_requests if not u.startswith(caused)]
            + [f"console error: {e}" for e in self.console_errors if not (caused and _mentions(e, caused))]
        )


def _mentions(text: str, urls: tuple[str, ...]) -> bool:
    return "ERR_BLOCKED_BY_CLIENT" in text and any(u in text for u in urls)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass  # one line per request would drown pytest's output


@contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve a built site on a free loopback port in a thread; yields its base URL (ending in /)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def chromium_path() -> str | None:
    """Debian's chromium (Playwright's own browsers cannot be downloaded here), or $KIT_CHROMIUM."""
    return os.environ.get("KIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _config() -> dict:
    from mkdocs.utils.yaml import yaml_load

    with open(REPO / "mkdocs.yml", encoding="utf-8") as fh:
        return yaml_load(fh)


def _url_path(src: str, directory_urls: bool) -> str:
    stem = src.rsplit(".", 1)[0]
    if not directory_urls:
        return stem + ".html"
    parent, _, name = stem.rpartition("/")
    if name in ("index", "README"):
        return f"{parent}/" if parent else ""
    return stem + "/"


def nav_pages() -> list[NavPage]:
    """Every page mkdocs.yml's nav lists (sections walked, external links left out), resolved to site URL paths."""
    config = _config()
    directory_urls = config.get("use_directory_urls", True)
    pages: list[NavPage] = []

    def walk(items: list) -> None:
        for item in items:
            title, target = next(iter(item.items())) if isinstance(item, dict) else (item, item)
            if isinstance(target, list):
                walk(target)
            elif "://" not in target:
                pages.append(NavPage(title, target, _url_path(target, directory_urls)))

    walk(config["nav"])
    return pages


def _notebook_file(src: str) -> Path:
    """The notebook the site renders: the executed copy when the pipeline has run (scripts/docs_hooks.py)."""
    name = Path(src).name
    executed = REPO / "reports" / "notebooks" / name
    return executed if executed.is_file() else REPO / "notebooks" / name


def notebook_image_outputs(src: str) -> int:
    """How many outputs of the rendered notebook are images (each shows as one <img> on its page)."""
    cells = json.loads(_notebook_file(src).read_text(encoding="utf-8"))["cells"]
    return sum(
        any(mime.startswith("image/") for mime in out.get("data", {}))
        for cell in cells
        for out in cell.get("outputs", [])
    )


def built_file(site: Path, page: NavPage) -> Path:
    """The HTML file a nav page was built into."""
    return site / page.path if page.path.endswith(".html") else site / page.path / "index.html"


def page_text(site: Path, page: NavPage) -> str:
    """A built page's visible text, lower-cased (scripts, styles and tags dropped)."""
    raw = re.sub(
        r"<(script|style)\b.*?</\1>", " ", built_file(site, page).read_text(encoding="utf-8"), flags=re.S | re.I
    )
    return html.unescape(re.sub(r"<[^>]+>", " ", raw)).lower()


def _markdown_words(src: str) -> list[str]:
    cells = json.loads(_notebook_file(src).read_text(encoding="utf-8"))["cells"]
    text = " ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    text = re.sub(r"`[^`]*`|\]\([^)]*\)|https?://\S+", " ", text)  # code spans and link targets are not prose
    return re.findall(r"(?<![\w.-])[a-z]{7,}(?![\w-])", text.lower())


def search_word(site: Path, pages: list[NavPage]) -> tuple[str, NavPage]:
    """A word a notebook's markdown holds and no non-notebook page's text does, with the notebook's nav page."""
    others = " ".join(page_text(site, p) for p in pages if not p.is_notebook)
    for page in (p for p in pages if p.is_notebook):
        for word in _markdown_words(page.src):
            if not re.search(rf"\b{word}", others):
                return word, page
    raise AssertionError("no word of any notebook's markdown is absent from the other docs pages")


def artefacts_dir() -> Path:
    """Where screenshots go: $KIT_TEST_ARTEFACTS, else <repo>/test-artefacts/ (git-ignored)."""
    path = Path(os.environ.get("KIT_TEST_ARTEFACTS") or REPO / "test-artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
