"""The data-lineage page of the docs, generated from dvc.yaml and dvc.lock: the stage graph (the SVG the docs hook
draws from `dvc dag --dot`) and, per stage, the hash and size of every output and the params it ran with."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


def _size(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def _commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def lineage_markdown(root: Path, graph_src: str = "assets/pipeline.svg") -> str:
    """The page body: commit, the stage graph picture, and one table of outputs and one line of params per stage.

    Args:
        root: the project (its dvc.yaml, and dvc.lock when the pipeline has run).
        graph_src: the stage-graph image, relative to the docs root.
    """
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"] if (root / "dvc.lock").is_file() else {}
    lines = [f"Built from commit `{_commit(root)}`; hashes are DVC's (md5, `.dir` for a directory).", "",
             f"![Stage graph (`dvc dag`)]({graph_src})", ""]  # fmt: skip
    for name in stages:
        locked = lock.get(name)
        lines += [f"## {name}", ""]
        if locked is None:
            lines += ["Not run yet (no entry in dvc.lock).", ""]
            continue
        params = locked.get("params", {}).get("params.yaml", {})
        lines += [f"Params: {', '.join(f'`{k}`' for k in params) or 'none'}.", "",
                  "| output | md5 | size |", "|---|---|---|"]  # fmt: skip
        lines += [f"| `{o['path']}` | `{o.get('md5', '')[:12]}` | {_size(o.get('size'))} |" for o in locked["outs"]]
        lines.append("")
    return "\n".join(lines)
