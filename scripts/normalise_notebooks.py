"""Rewrite the stage notebooks byte for byte as Jupyter saves them (nbformat's JSON, outputs already stripped), so
saving one from JupyterLab changes nothing DVC hashes. Run after editing a notebook outside Jupyter."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    changed = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text(encoding="utf-8")
        canonical = nbformat.writes(nbformat.reads(text, as_version=4)) + "\n"
        if canonical != text:
            path.write_text(canonical, encoding="utf-8")
            changed.append(path.relative_to(ROOT).as_posix())
    print("normalised: " + (", ".join(changed) or "nothing to do"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
