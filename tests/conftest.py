"""Shared test set-up: offline hubs, the repo root, small synthetic corpora and a temp copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a project copy leaves out: environments, caches and every generated output. Output dirs are matched only at
# the top level (kit/data/ is source, data/ is an output).
_IGNORE_ANYWHERE = {".venv", ".tools", ".git", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".hypothesis"}
_IGNORE_TOP = {"cache", "tmp", "site", "data", "models", "reports", "checkpoints", "deploy", "bench-data"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    here = Path(directory).resolve()
    top = here in (REPO, REPO / ".dvc")  # .dvc/cache and .dvc/tmp too
    return {n for n in names if n in _IGNORE_ANYWHERE or n.endswith(".egg-info") or (top and n in _IGNORE_TOP)}


def make_texts(n_per_class: int, labels=("negative", "neutral", "positive"), seed: int = 0) -> list[tuple[str, str]]:
    """Distinct, label-correlated texts so a classifier can learn something from a few hundred rows."""
    import random

    rng = random.Random(seed)
    cue = {"negative": ["awful", "hate", "broken", "worst"], "neutral": ["today", "report", "store", "update"],
           "positive": ["love", "great", "amazing", "best"]}
    filler = ["the", "car", "phone", "flight", "service", "new", "my", "this", "app", "again", "really", "so"]
    rows = []
    for lab in labels:
        words = cue.get(lab, [lab])
        for i in range(n_per_class):
            body = " ".join(rng.choice(filler) for _ in range(rng.randint(3, 12)))
            rows.append((f"{body} {rng.choice(words)} {lab[:3]}{i}", lab))
    rng.shuffle(rows)
    return rows


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    import pandas as pd

    path = tmp_path / "corpus.csv"
    pd.DataFrame(make_texts(60), columns=["text", "label"]).to_csv(path, index=False)
    return path


def copy_project(dest: Path) -> Path:
    """A runnable copy of the project (sources only) in its own git repo, as a fresh clone would be."""
    shutil.copytree(REPO, dest, ignore=_ignore, symlinks=True)
    shutil.copytree(REPO / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"), dirs_exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, so `kit` and `dvc` are the project's."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONHASHSEED"] = "0"
    return env


@dataclass(frozen=True)
class BuiltSite:
    path: Path
    build_s: float  # wall time of the build


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory) -> BuiltSite:
    """The docs site built once per run, as `make docs` builds it: test_docs.py reads its pages and
    test_docs_browser.py serves it to Chromium (one build of about 25 s instead of two)."""
    if shutil.which("dot") is None:
        pytest.fail("graphviz `dot` is missing: .ci/run installs Debian's graphviz (the docs draw the pipeline)")
    dest = tmp_path_factory.mktemp("docs") / "site"
    start = time.perf_counter()
    res = subprocess.run(["mkdocs", "build", "--strict", "-q", "-d", str(dest)], cwd=REPO, capture_output=True,
                         text=True, env=run_env())  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return BuiltSite(dest, time.perf_counter() - start)
