"""The built docs site in a real browser (Debian's chromium driven by Playwright): every nav page loads clean and
offline, the notebooks show their plots, search finds a notebook by its prose, the mobile nav drawer opens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures_browser import (
    NavPage,
    PageWatch,
    artefacts_dir,
    chromium_path,
    nav_pages,
    notebook_image_outputs,
    search_word,
    serve,
)

# Every <img> that is broken (no pixels) after load; lazy ones are made eager first so none is skipped.
BROKEN_IMAGES_JS = """async () => {
  const bad = [];
  for (const img of document.images) {
    img.loading = "eager";
    try { await img.decode(); } catch (e) {}
    if (img.naturalWidth === 0) bad.push((img.currentSrc || img.src).slice(0, 120));
  }
  return bad;
}"""
# Plots: images of real size inside the rendered notebook, shown (laid out) on the page.
PLOTS_JS = """() => Array.from(document.querySelectorAll(".jupyter-wrapper img")).filter(
  (i) => i.naturalWidth >= 100 && i.naturalHeight >= 100 && i.getBoundingClientRect().width > 0).length"""
NAV_LINKS_JS = """() => Array.from(document.querySelectorAll(".md-nav--primary a.md-nav__link[href]"))
  .map((a) => new URL(a.href)).filter((u) => u.origin === location.origin && !u.hash).map((u) => u.pathname)"""


@dataclass
class Site:
    base: str
    dir: Path
    pages: list[NavPage]
    build_s: float
    checked: list[str] = field(default_factory=list)


@dataclass
class Visit:
    status: int | None
    problems: list[str]
    broken_images: list[str]
    plots: int


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """A line on pytest's terminal even with output captured (artefact paths, the summary)."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="module")
def site(docs_site, request):
    dest, build_s = docs_site.path, docs_site.build_s
    _say(request, f"docs site: mkdocs build --strict took {build_s:.1f} s")
    with serve(dest) as base:
        built = Site(base, dest, nav_pages(), build_s)
        yield built
    _say(request, f"docs browser: site built in {build_s:.1f} s; {'; '.join(built.checked)}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import Error, sync_playwright

    exe = chromium_path()
    if exe is None:
        print(reason := "no chromium on PATH (.ci/run installs Debian's chromium)")
        pytest.skip(reason)
    with sync_playwright() as pw:
        try:
            launched = pw.chromium.launch(executable_path=exe, headless=True)
        except Error as err:
            print(reason := f"chromium at {exe} cannot be launched: {str(err).splitlines()[0]}")
            pytest.skip(reason)
        yield launched
        launched.close()


def _open(context, url: str, watch: PageWatch):
    page = context.new_page()
    page.route("**/*", watch.route)
    watch.attach(page)
    response = page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")  # late requests too (e.g. a diagram library fetched by script)
    return page, response


@pytest.fixture(scope="module")
def visits(browser, site, request) -> dict[str, Visit]:
    """Every nav page loaded once in a desktop viewport; screenshots of the home page and the first plotted notebook."""
    site.checked.append(f"chromium {browser.version} ({chromium_path()}), headless")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    out, shots, notebook_shot = {}, artefacts_dir(), False
    for nav in site.pages:
        watch = PageWatch()
        page, response = _open(context, site.base + nav.path, watch)
        out[nav.path] = Visit(response and response.status, watch.problems(), page.evaluate(BROKEN_IMAGES_JS), 0)
        if nav.is_notebook:
            out[nav.path].plots = page.evaluate(PLOTS_JS)
        if nav.path == "" or (nav.is_notebook and out[nav.path].plots and not notebook_shot):
            if nav.is_notebook:  # its first plot in view
                page.locator(".jupyter-wrapper img").first.scroll_into_view_if_needed()
                notebook_shot = True
            path = shots / ("home.png" if nav.path == "" else f"notebook-{Path(nav.src).stem}.png")
            page.screenshot(path=path)
            _say(request, f"screenshot: {path}")
        page.close()
    context.close()
    return out


def test_every_nav_page_loads_clean_and_offline(visits, site):
    pages_of: dict[str, list[str]] = {}  # one line per problem, naming every page it happens on
    for path, v in visits.items():
        found = [f"HTTP {v.status}"] * (v.status != 200) + v.problems + [f"broken <img>: {s}" for s in v.broken_images]
        for problem in dict.fromkeys(found):  # a page that raises the same error twice is named once
            pages_of.setdefault(problem, []).append(f"/{path}")
    assert not pages_of, "\n".join(f"{p}  [on {len(on)} page(s): {', '.join(on)}]" for p, on in pages_of.items())
    assert len(visits) == len(site.pages) >= 2
    site.checked.append(
        f"{len(visits)} nav pages: HTTP 200, no console errors, no failed or off-loopback requests, no broken images"
    )


def test_the_rendered_nav_is_the_mkdocs_yml_nav(browser, site):
    """What the test visits is what a reader can click: mkdocs.yml's nav resolved to URLs is the site's nav."""
    page, _ = _open(browser.new_context(), site.base, PageWatch())  # its problems are the visits' to judge
    rendered = set(page.evaluate(NAV_LINKS_JS))
    page.context.close()
    assert rendered == {"/" + p.path for p in site.pages}


def test_notebook_pages_show_their_plots(visits, site):
    expected = {p.path: notebook_image_outputs(p.src) for p in site.pages if p.is_notebook}
    assert expected, "the nav lists no notebook"
    shown = {path: visits[path].plots for path in expected}
    assert shown == expected  # every image output of each notebook is on its page, at real size
    assert sum(expected.values()) > 0, "no notebook has a plot: nothing was checked"
    site.checked.append(f"{sum(shown.values())} plots on {sum(n > 0 for n in shown.values())}/{len(shown)} notebooks")


def test_search_finds_a_notebook_by_a_word_only_its_markdown_holds(browser, site):
    word, notebook = search_word(site.dir, site.pages)
    watch = PageWatch()
    page, _ = _open(browser.new_context(viewport={"width": 1280, "height": 900}), site.base, watch)
    page.locator("input.md-search__input").click()
    page.locator("input.md-search__input").press_sequentially(word, delay=20)
    links = page.locator(".md-search-result__item a.md-search-result__link")
    links.first.wait_for(timeout=15_000)
    hrefs = links.evaluate_all("(as) => as.map((a) => new URL(a.href).pathname)")
    page.context.close()
    assert f"/{notebook.path}" in hrefs, f"search for {word!r}: {hrefs}"
    assert not {f"/{p.path}" for p in site.pages if not p.is_notebook} & set(hrefs), f"{word!r}: {hrefs}"
    assert not watch.problems(), "\n".join(watch.problems())
    site.checked.append(f"search {word!r} -> {notebook.path}")


def test_mobile_home_renders_and_the_nav_drawer_opens(browser, site, request):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    watch = PageWatch()
    page, response = _open(context, site.base, watch)
    assert response is not None and response.status == 200
    expect(page.locator("article h1").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "page wider than the phone"
    drawer = page.locator(".md-sidebar--primary .md-nav--primary").first
    expect(drawer).not_to_be_in_viewport()
    page.locator("label.md-header__button[for='__drawer']").tap()
    expect(drawer).to_be_in_viewport()
    path = artefacts_dir() / "home-mobile-drawer.png"
    page.screenshot(path=path)
    _say(request, f"screenshot: {path}")
    context.close()
    assert not watch.problems(), "\n".join(watch.problems())
    site.checked.append("mobile 390x844 home + nav drawer")
