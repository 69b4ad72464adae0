"""Notebook runner checks: injected params land in the notebook, undeclared params and failing cells are errors."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from kit.core import runner
from kit.core.errors import NotebookError, UnknownParameterError
from kit.core.params import load_params


def make_project(tmp_path: Path, cells: list[str], declare: str = "data = None") -> Path:
    (tmp_path / "params.yaml").write_text("data:\n  seed: 5\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(declare)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "nb.ipynb").write_text(nbformat.writes(nb))
    return tmp_path


@pytest.fixture
def stage(monkeypatch):
    s = runner.Stage("probe", "nb.ipynb", ("data",))
    monkeypatch.setitem(runner.STAGES, "probe", s)
    return s


def test_stage_parameters_are_whole_sections_with_defaults(tmp_path):
    params = load_params(make_project(tmp_path, []) / "params.yaml")
    injected = runner.stage_parameters(runner.STAGES["data"], params)
    assert list(injected) == ["data"]
    assert injected["data"]["seed"] == 5 and injected["data"]["source"] == "embedded"


def test_runs_on_project_kernel_with_injected_params(tmp_path, stage):
    root = make_project(tmp_path, ["import sys, os\nprint(sys.executable, data['seed'], os.getcwd())"])
    out = runner.run_stage("probe", root=root)
    assert out == root / "reports/notebooks/nb.ipynb"
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    import sys

    assert f"{sys.executable} 5 {root}" in text


def test_undeclared_parameter_is_an_error(tmp_path, stage):
    root = make_project(tmp_path, ["pass"], declare="other = None")
    with pytest.raises(UnknownParameterError, match="does not declare data"):
        runner.run_stage("probe", root=root)
    assert not (root / "reports").exists()


def test_failing_cell_reports_cell_error_and_partial_notebook(tmp_path, stage):
    root = make_project(tmp_path, ["x = 1", "raise ValueError('bad column zap')", "print('never')"])
    with pytest.raises(NotebookError) as info:
        runner.run_stage("probe", root=root)
    err = info.value
    assert (err.ename, err.evalue) == ("ValueError", "bad column zap")
    assert err.output.is_file() and "partial output notebook" in str(err)
    assert err.cell_index is not None
    cells = nbformat.read(err.output, as_version=4).cells
    assert any(o.get("ename") == "ValueError" for c in cells for o in c.get("outputs", []))


def test_unknown_stage():
    from kit.core.errors import KitError

    with pytest.raises(KitError, match="unknown stage 'nope'"):
        runner.run_stage("nope")


PROBE = """\
import os, time
import tqdm.auto, tqdm.notebook
from kit.core.progress import StepTimer, progress
timer = StepTimer("probe")
with timer.step("count"):
    for _ in progress(range(3), desc="probe bar"):
        time.sleep(0.05)
print("auto bar is a widget:", issubclass(tqdm.auto.tqdm, tqdm.notebook.tqdm))
os.environ.pop("KIT_PROGRESS")
print("kit bar is a widget:", isinstance(progress(total=1, disable=True), tqdm.notebook.tqdm))
"""


def test_console_shows_the_kernels_progress_lines_and_step_summaries(tmp_path, stage, capfd):
    root = make_project(tmp_path, [PROBE])
    out = runner.run_stage("probe", root=root)
    err = capfd.readouterr().err
    assert "probe bar: 100%" in err  # the kernel's text bar reached the console (one line per refresh)
    assert "probe: count 0." in err  # one summary line per step
    assert "stage 'probe' done in" in err
    # In a Jupyter kernel tqdm.auto (and the kit's bar, unless `kit run` asks for lines) draws the ipywidgets widget,
    # so nothing warns that IProgress is missing.
    assert "auto bar is a widget: True" in err and "kit bar is a widget: True" in err
    text = "".join(str(o) for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    assert "IProgress" not in text and "TqdmWarning" not in text


def _papermill(calls: list[str], *errors: str):
    """A stand-in for papermill's execute_notebook that raises RuntimeError(errors[n]) on its n-th call, then succeeds."""

    def execute(path, **kw):
        calls.append(path)
        if len(calls) <= len(errors):
            raise RuntimeError(errors[len(calls) - 1])

    return execute


def test_a_kernel_that_died_as_it_started_is_started_again_and_other_failures_are_not(capsys):
    from kit.core.runner import KERNEL_START_TRIES, _execute

    died = "Kernel died before replying to kernel_info"
    calls: list[str] = []
    _execute(_papermill(calls, died), "nb.ipynb", kernel_name="kit")  # the second queued kernel lost its port, once
    assert calls == ["nb.ipynb", "nb.ipynb"] and "try 2 of" in capsys.readouterr().err

    calls = []
    with pytest.raises(RuntimeError, match="something else"):
        _execute(_papermill(calls, "something else"), "nb.ipynb")
    assert calls == ["nb.ipynb"]  # not retried

    calls = []
    with pytest.raises(RuntimeError, match="Kernel died"):
        _execute(_papermill(calls, *[died] * KERNEL_START_TRIES), "nb.ipynb")
    assert len(calls) == KERNEL_START_TRIES
