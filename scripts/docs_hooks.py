"""MkDocs hooks: render each stage's executed notebook and the params reference generated from the schema.
The executed copy (reports/notebooks/) is shown when the pipeline has run; the source notebook otherwise."""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- params-reference -->"


@event_priority(100)  # before mkdocs-jupyter, so it converts the notebooks added here
def on_files(files, config):
    for src in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        executed = ROOT / "reports" / "notebooks" / src.name
        # A plain File rooted where the notebook lies: mkdocs-jupyter's wrapper cannot read generated files.
        base = ROOT / "reports" if executed.is_file() else ROOT
        files.append(File(f"notebooks/{src.name}", str(base), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        from kit.core.params import reference_markdown

        markdown = markdown.replace(MARKER, reference_markdown())
    return markdown
