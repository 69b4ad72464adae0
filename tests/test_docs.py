"""The docs site builds with --strict: every nav page exists, every notebook renders, the params reference is generated."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO, run_env


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    res = subprocess.run(["mkdocs", "build", "--strict", "-q", "-d", str(site)], cwd=REPO, capture_output=True,
                         text=True, env=run_env())
    assert res.returncode == 0, res.stdout + res.stderr
    pipeline = (site / "pipeline" / "index.html").read_text()
    assert "finetune.learning_rate" in pipeline and "<!-- params-reference -->" not in pipeline
    assert (site / "notebooks" / "01_data" / "index.html").is_file()
