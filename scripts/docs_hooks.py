"""MkDocs hooks: render each stage's executed notebook and the params reference generated from the schema (whole, or
one section's table on its stage page).
The executed copy (reports/notebooks/) is shown when the pipeline has run; the source notebook otherwise."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- params-reference -->"
# One section's table on its stage page: <!-- params-reference:monitor -->
SECTION_MARKER = re.compile(r"<!-- params-reference:(\w+) -->")


@event_priority(100)  # before mkdocs-jupyter, so it converts the notebooks added here
def on_files(files, config):
    for src in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        executed = ROOT / "reports" / "notebooks" / src.name
        # A plain File rooted where the notebook lies: mkdocs-jupyter's wrapper cannot read generated files.
        base = ROOT / "reports" if executed.is_file() else ROOT
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


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown or SECTION_MARKER.search(markdown):
        from kit.core.params import reference_markdown

        ref = reference_markdown()
        markdown = markdown.replace(MARKER, ref)
        markdown = SECTION_MARKER.sub(lambda m: section_reference(ref, m.group(1)), markdown)
    return markdown
