"""The data-lineage page of the docs, generated from dvc.yaml and dvc.lock: the stage graph as a Mermaid diagram
and, per stage, the hash and size of every output and the params it ran with (what `dvc dag` and the lock record)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml


def _edges(stages: dict[str, Any]) -> list[tuple[str, str]]:
    """(producer, consumer) when a stage depends on another's output or on a path inside it."""
    outs = {
        name: [next(iter(o)) if isinstance(o, dict) else o for o in spec.get("outs", []) + spec.get("metrics", [])]
        for name, spec in stages.items()
    }
    edges = []
    for consumer, spec in stages.items():
        for dep in spec.get("deps", []):
            for producer, paths in outs.items():
                if producer != consumer and any(dep == p or dep.startswith(p.rstrip("/") + "/") for p in paths):
                    edges.append((producer, consumer))
    return sorted(set(edges), key=lambda e: (list(stages).index(e[0]), list(stages).index(e[1])))


def _size(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def _commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def lineage_markdown(root: Path) -> str:
    """The page body: commit, Mermaid stage graph, and one table of outputs and one line of params per stage."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"] if (root / "dvc.lock").is_file() else {}
    lines = [f"Built from commit `{_commit(root)}`; hashes are DVC's (md5, `.dir` for a directory).", "",
             "```mermaid", "graph LR"]  # fmt: skip
    lines += [f"  {a} --> {b}" for a, b in _edges(stages)]
    lines += ["```", ""]
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
