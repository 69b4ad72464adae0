"""The docs site builds with --strict: every nav page exists, every notebook renders, the params reference is generated."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO, run_env


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    res = subprocess.run(
        ["mkdocs", "build", "--strict", "-q", "-d", str(site)], cwd=REPO, capture_output=True, text=True, env=run_env()
    )
    assert res.returncode == 0, res.stdout + res.stderr
    pipeline = (site / "pipeline" / "index.html").read_text()
    assert "finetune.learning_rate" in pipeline and "<!-- params-reference -->" not in pipeline
    assert (site / "notebooks" / "01_data" / "index.html").is_file()


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_notebook_with_an_error_output_is_named_with_its_cell(tmp_path):
    import nbformat

    hooks = _hooks()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("1/0")])
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero")]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert hooks.notebook_errors(tmp_path / "nb.ipynb") == ["cell 1: ZeroDivisionError: division by zero"]
    nb.cells[1].outputs = []
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert hooks.notebook_errors(tmp_path / "nb.ipynb") == []
    for executed in sorted((REPO / "reports" / "notebooks").glob("*.ipynb")):  # the committed pipeline run
        assert hooks.notebook_errors(executed) == [], executed.name


def test_a_page_over_the_size_budget_fails_the_build_naming_it(tmp_path):
    import pytest
    from mkdocs.exceptions import PluginError

    hooks = _hooks()
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "index.html").write_text("x" * 1000)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "index.html").write_text("x" * 300_000)
    hooks.on_post_build({"extra": {"page_budget_mb": 0.5}, "site_dir": str(tmp_path)})  # both within 0.5 MB
    with pytest.raises(PluginError, match=r"big/index.html \(0.3 MB\)") as err:
        hooks.on_post_build({"extra": {"page_budget_mb": 0.1}, "site_dir": str(tmp_path)})
    assert "small" not in str(err.value)


def test_lineage_page_is_dvc_yaml_and_dvc_lock(tmp_path):
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("lineage", REPO / "scripts" / "lineage.py")
    lineage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lineage)
    page = lineage.lineage_markdown(REPO)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert "```mermaid\ngraph LR\n" in page
    for edge in ("data --> finetune", "finetune --> optimize", "optimize --> deploy", "deploy --> monitor"):
        assert f"  {edge}\n" in page, edge
    for name in stages:
        assert f"## {name}\n" in page
        for out in lock[name]["outs"]:  # every output the lock records, with its hash
            assert f"| `{out['path']}` | `{out['md5'][:12]}` |" in page, out["path"]
    # A project that never ran: the graph still, and each stage says so.
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    fresh = lineage.lineage_markdown(tmp_path)
    assert "data --> finetune" in fresh and fresh.count("Not run yet") == len(stages)
