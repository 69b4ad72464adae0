"""MkDocs hooks: render each stage's executed notebook (with its run header, without the noise), the home page's
last-run figures and pipeline picture, the model card, the lineage page and the params reference (whole, or one
section's table on its stage page), and the stage pages' measured tables and the stage times (scripts/docs_measured.py).
The executed copy (reports/notebooks/) is shown when the pipeline has run; the source notebook otherwise. The build
fails on a notebook holding an error output and on a page over the size budget (`extra.page_budget_mb`, 5 MB).
Notebook code cells and outputs stay on the page but out of the search index."""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from pathlib import Path
from types import ModuleType

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- params-reference -->"
LINEAGE_MARKER = "<!-- lineage -->"
HEADLINE_MARKER = "<!-- headline -->"
PIPELINE_SVG = "assets/pipeline.svg"
MODEL_CARD = "model_card.md"
# The cleaned notebooks of the current build (mkdocs-jupyter reads a File's abs_src_path, so they must be real files).
_notebook_dir: tempfile.TemporaryDirectory[str] | None = None
# One section's table on its stage page: <!-- params-reference:monitor -->
SECTION_MARKER = re.compile(r"<!-- params-reference:(\w+) -->")
DEFAULT_BUDGET_MB = 5.0


def notebook_errors(path: Path) -> list[str]:
    """Where an executed notebook holds an error output: "cell N: Ename: value" per error."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return [
        f"cell {i}: {out.get('ename')}: {str(out.get('evalue'))[:200]}"
        for i, cell in enumerate(cells)
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def _script(name: str) -> ModuleType:
    """A sibling module of scripts/ (not a package: loaded by path, as MkDocs loads this hook)."""
    spec = importlib.util.spec_from_file_location(f"kit_docs_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _executed_notebook(executed: Path, out_dir: Path) -> Path:
    """The executed notebook, headed by its run record and cleaned (scripts/docs_notebooks.py), written to out_dir."""
    import nbformat

    nbs = _script("docs_notebooks")
    stage = executed.stem.split("_", 1)[1]
    nb = nbformat.read(executed, as_version=4)
    ran = nb.metadata.get("papermill", {}).get("parameters")
    nbs.clean_notebook(nb, nbs.run_header(stage, ROOT / "dvc.lock", ran))
    nbformat.write(nb, out_dir / executed.name)
    return out_dir / executed.name


def _model_card() -> str:
    card = ROOT / "reports" / "model_card.md"
    if card.is_file():
        return card.read_text(encoding="utf-8")
    return "# Model card\n\nNot written yet: the finetune stage writes `reports/model_card.md` (`make run`).\n"


@event_priority(100)  # before mkdocs-jupyter, so it converts the notebooks added here
def on_files(files, config):
    global _notebook_dir
    if _notebook_dir is not None:  # a rebuild under `mkdocs serve`: the previous build's copies are done with
        _notebook_dir.cleanup()
    _notebook_dir = tempfile.TemporaryDirectory(prefix="kit-docs-")
    out_dir = Path(_notebook_dir.name) / "notebooks"
    out_dir.mkdir()
    for src in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        executed = ROOT / "reports" / "notebooks" / src.name
        base = ROOT
        if executed.is_file():
            if errors := notebook_errors(executed):
                # mkdocs-jupyter would render the traceback as if it were a result; a failed run is not documentation
                raise PluginError(f"{executed.relative_to(ROOT)} holds error output(s): {'; '.join(errors)}")
            _executed_notebook(executed, out_dir)
            base = Path(_notebook_dir.name)
        # A plain File rooted where the notebook lies: mkdocs-jupyter's wrapper cannot read generated files.
        files.append(File(f"notebooks/{src.name}", str(base), config["site_dir"], config["use_directory_urls"]))
    files.append(File.generated(config, MODEL_CARD, content=_model_card()))
    try:
        svg = _script("docs_home").pipeline_svg(ROOT)
    except RuntimeError as exc:
        raise PluginError(str(exc)) from None
    files.append(File.generated(config, PIPELINE_SVG, content=svg))
    return files


def on_shutdown():
    if _notebook_dir is not None:
        _notebook_dir.cleanup()


def section_reference(reference: str, section: str) -> str:
    """The table of one section out of the whole generated reference (its `### `section`` block, heading dropped)."""
    blocks = re.split(r"^### ", reference, flags=re.M)
    for block in blocks:
        head, _, body = block.partition("\n")
        if head.strip() == f"`{section}`":
            return body.strip() + "\n"
    raise ValueError(f"params reference has no section {section!r}")


def home_markdown(root: Path) -> str:
    """The home page's generated top: the last run's headline figures, then the pipeline picture."""
    table = _script("docs_home").headline_markdown(root)
    return f"## What the last run achieved\n\n{table}\n![The pipeline: DVC's stage graph]({PIPELINE_SVG})\n"


def on_page_markdown(markdown, page, config, files):
    if HEADLINE_MARKER in markdown:
        markdown = markdown.replace(HEADLINE_MARKER, home_markdown(ROOT))
    if LINEAGE_MARKER in markdown:
        markdown = markdown.replace(LINEAGE_MARKER, _script("lineage").lineage_markdown(ROOT, PIPELINE_SVG))
    if MARKER in markdown or SECTION_MARKER.search(markdown):
        from kit.core.params import reference_markdown

        ref = reference_markdown()
        markdown = markdown.replace(MARKER, ref)
        markdown = SECTION_MARKER.sub(lambda m: section_reference(ref, m.group(1)), markdown)
    if "<!-- measured:" in markdown or "<!-- stage-times -->" in markdown:
        try:
            markdown = _script("docs_measured").replace_markers(markdown, ROOT)
        except ValueError as exc:
            raise PluginError(f"{page.file.src_uri}: {exc}") from None
    return markdown


def search_text(html: str) -> str:
    """A notebook page's HTML without its code cells (input and output) and the folded papermill cell: what the
    search index gets, so searching finds the narrative and not every variable name and printed number."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for el in soup.select(f"div.jp-CodeCell, .{_script('docs_notebooks').INJECTED_CLASS}"):
        el.decompose()
    return str(soup)


@event_priority(-100)  # last, so the search plugin's on_page_context (next event) indexes the stripped content
def on_page_content(html, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        page.kit_full_content = html
        return search_text(html)
    return html


@event_priority(-100)  # after the search plugin indexed page.content: the page itself shows the whole notebook
def on_page_context(context, page, config, nav):
    full = getattr(page, "kit_full_content", None)
    if full is not None:
        page.content = full
    return context


@event_priority(-100)  # after the search plugin wrote search/search_index.json
def on_post_build(config):
    budget = float(config["extra"].get("page_budget_mb", DEFAULT_BUDGET_MB))
    site = Path(config["site_dir"])
    over = sorted(
        (p.stat().st_size / 2**20, p.relative_to(site).as_posix())
        for p in site.rglob("*.html")
        if p.stat().st_size > budget * 2**20
    )
    if over:
        pages = ", ".join(f"{name} ({size:.1f} MB)" for size, name in over)
        raise PluginError(f"page(s) over the {budget:g} MB budget (extra.page_budget_mb): {pages}")
