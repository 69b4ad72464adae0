"""Lint gates run by the test suite: ruff (lint + format) and mypy, configured in pyproject.toml.
The scope is the code every stage and the container depend on (kit/core, kit/serve, the root CLI), kit/monitor and kit/cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCOPE = ["kit/core", "kit/serve", "kit/monitor", "kit/cost", "kit/cli.py", "tests/test_layout.py", "tests/test_lint.py"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "cmd", [("ruff", "check", *SCOPE), ("ruff", "format", "--check", *SCOPE)], ids=["ruff-check", "ruff-format"]
)
def test_ruff(cmd):
    out = _run(*cmd)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_on_core_and_serve():
    out = _run("mypy")  # files and strictness from [tool.mypy] in pyproject.toml
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout


def test_ruff_finds_what_it_is_meant_to(tmp_path):
    # The gate must be able to fail: an unused import and a bad format under the same configuration.
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nx=1\n")
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(REPO / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1 and "F401" in check.stdout
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--config", str(REPO / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 1
