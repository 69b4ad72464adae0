"""The docs home page's generated top: what the last pipeline run achieved (kit.core.headline's figures, grouped by
stage, formatted by unit) and the pipeline as a picture (an SVG drawn at build time by graphviz from `dvc dag --dot`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kit.core.headline import HEADLINES, HeadlineFigure, read_headlines
from kit.core.layout import LAYOUT

__all__ = ["format_value", "headline_markdown", "pipeline_svg"]


# kit.core.headline's units: "" (plain number), "pts", "x", "ms", "rps", "usd", "share" (0-1), "count".
_FORMATS = {
    "": "{:.4f}",
    "pts": "{:.2f} points",
    "x": "{:.2f}×",
    "ms": "{:,.1f} ms",
    "rps": "{:,.0f} req/s",
    "usd": "${:,.2f}",
    "count": "{:,.0f}",
}


def format_value(value: float, unit: str) -> str:
    """One figure as the page prints it, by its unit (an unknown unit: four significant digits and the unit)."""
    if unit == "share":
        return f"{100 * value:.1f} %"
    return _FORMATS[unit].format(value) if unit in _FORMATS else f"{value:.4g} {unit}"


def headline_markdown(root: Path, figures: list[HeadlineFigure] | None = None) -> str:
    """The 'last run' table: one row per figure, grouped by stage in pipeline order; a stage whose metrics file is
    missing (not run yet) gets one row saying so, and a project with none says the pipeline has not run."""
    figures = read_headlines(root) if figures is None else figures
    metrics_dir = LAYOUT.metrics_dir
    if not figures:
        return (
            f'!!! note "The pipeline has not run yet"\n    No headline figures in `{metrics_dir}/`: run `make run` '
            "(or `dvc repro`), then rebuild the docs.\n"
        )
    lines = ["| stage | figure | value |", "|---|---|---|"]
    for stage in HEADLINES:
        rows = [f for f in figures if f.stage == stage]
        if not rows:
            lines.append(f"| **{stage}** | not run yet (no `{metrics_dir}/{stage}.json`) | |")
        for i, fig in enumerate(rows):
            lines.append(f"| {f'**{stage}**' if i == 0 else ''} | {fig.label} | {format_value(fig.value, fig.unit)} |")
    return "\n".join(lines) + "\n"


def pipeline_svg(root: Path) -> str:
    """The stage graph DVC itself computes (`dvc dag --dot`), laid out left to right by graphviz as inline-able SVG.

    Raises:
        RuntimeError: graphviz's `dot` or `dvc` is missing, or either fails (the message says which and why).
    """
    for tool, package in (("dot", "Debian's graphviz"), ("dvc", "requirements.lock")):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` not found: the docs draw the pipeline with it (install {package})")
    dag = subprocess.run(["dvc", "dag", "--dot"], cwd=root, capture_output=True, text=True)
    if dag.returncode != 0:
        raise RuntimeError(f"`dvc dag --dot` failed in {root}: {dag.stderr.strip()[:300]}")
    # Left to right and Material's font stack, so the picture reads like the page around it.
    dot_src = dag.stdout.replace("{", '{\nrankdir=LR;\nnode [shape=box, style=rounded, fontname="Helvetica"];', 1)
    svg = subprocess.run(["dot", "-Tsvg"], input=dot_src, capture_output=True, text=True)
    if svg.returncode != 0:
        raise RuntimeError(f"graphviz `dot -Tsvg` failed on the DAG: {svg.stderr.strip()[:300]}")
    return svg.stdout
