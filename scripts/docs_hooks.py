"""MkDocs hooks: render each stage's executed notebook and the params reference generated from the schema (whole, or
one section's table on its stage page).
The executed copy (reports/notebooks/) is shown when the pipeline has run; the source notebook otherwise. The build
fails on a notebook holding an error output and on a page over the size budget (`extra.page_budget_mb`, 5 MB)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- params-reference -->"
LINEAGE_MARKER = "<!-- lineage -->"
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


@event_priority(100)  # before mkdocs-jupyter, so it converts the notebooks added here
def on_files(files, config):
    for src in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        executed = ROOT / "reports" / "notebooks" / src.name
        # A plain File rooted where the notebook lies: mkdocs-jupyter's wrapper cannot read generated files.
        base = ROOT / "reports" if executed.is_file() else ROOT
        if executed.is_file() and (errors := notebook_errors(executed)):
            # mkdocs-jupyter would render the traceback as if it were a result; a failed run is not documentation
            raise PluginError(f"{executed.relative_to(ROOT)} holds error output(s): {'; '.join(errors)}")
        files.append(File(f"notebooks/{src.name}", str(base), config["site_dir"], config["use_directory_urls"]))
    return files


def section_reference(reference: str, section: str) -> str:
    """The table of one section out of the whole generated reference (its `### `section`` block, heading dropped)."""
    blocks = re.split(r"^### ", reference, flags=re.M)
    for block in blocks:
        head, _, body = block.partition("\n")
        if head.strip() == f"`{section}`":
            return body.strip() + "\n"
    raise ValueError(f"params reference has no section {section!r}")


def _lineage() -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kit_docs_lineage", ROOT / "scripts" / "lineage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lineage_markdown(ROOT)


def on_page_markdown(markdown, page, config, files):
    if LINEAGE_MARKER in markdown:
        markdown = markdown.replace(LINEAGE_MARKER, _lineage())
    if MARKER in markdown or SECTION_MARKER.search(markdown):
        from kit.core.params import reference_markdown

        ref = reference_markdown()
        markdown = markdown.replace(MARKER, ref)
        markdown = SECTION_MARKER.sub(lambda m: section_reference(ref, m.group(1)), markdown)
    return markdown


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
