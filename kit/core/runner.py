"""Execute a stage notebook with papermill: validate params, inject the stage's sections, report failures.
This is what every `dvc.yaml` stage calls (`kit run STAGE`)."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import KitError, NotebookError, UnknownParameterError
from kit.core.headline import HEADLINES, write_headline, write_stage_time
from kit.core.io import project_root, rel_path, write_text
from kit.core.params import Params, load_params
from kit.core.progress import PROGRESS_ENV

__all__ = ["Stage", "STAGES", "stage_parameters", "run_stage"]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its notebook and the params.yaml sections it reads (injected as dicts)."""

    name: str
    notebook: str
    sections: tuple[str, ...]


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("data", "notebooks/01_data.ipynb", ("data",)),
        Stage("finetune", "notebooks/02_finetune.ipynb", ("model", "finetune")),
        Stage("optimize", "notebooks/03_optimize.ipynb", ("model", "optimize")),
        Stage("deploy", "notebooks/04_deploy.ipynb", ("serve", "deploy")),
        Stage("monitor", "notebooks/05_monitor.ipynb", ("serve", "monitor")),
        Stage("cost", "notebooks/06_cost.ipynb", ("cost",)),
    )
}

OUTPUT_DIR = "reports/notebooks"


def stage_parameters(stage: Stage, params: Params) -> dict[str, dict]:
    """The values papermill injects: one dict per section the stage reads, defaults filled in."""
    return {sec: getattr(params, sec).model_dump(mode="json") for sec in stage.sections}


def _kernel_dir() -> tempfile.TemporaryDirectory:
    """A kernelspec that runs this very interpreter, so no `ipykernel install` is needed and a user-level
    `python3` kernel pointing at another Python can never be picked by mistake."""
    tmp = tempfile.TemporaryDirectory(prefix="kit-kernel-")
    spec = Path(tmp.name) / "kernels" / "kit"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "kit (project environment)",
                "language": "python",
            }
        )
    )
    return tmp


class _RawHandler(logging.Handler):
    """Print papermill's cell output as it comes, without logger prefixes, so progress stays readable."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith(("Executing Cell", "Ending Cell")):
            return  # the cell progress bar already says where we are
        stream = sys.stderr
        stream.write(msg if msg.endswith(("\n", "\r")) else msg + "\n")
        stream.flush()


def _relative_metadata(notebook: Path, root: Path) -> None:
    """papermill records where it read and wrote the notebook as absolute paths; store them relative to the project
    root, so an executed notebook is the same file on every machine and in every clone."""
    import nbformat

    nb = nbformat.read(notebook, as_version=nbformat.NO_CONVERT)
    meta = nb.metadata.get("papermill", {})
    changed = False
    for key in ("input_path", "output_path"):
        if isinstance(meta.get(key), str):
            rel = rel_path(meta[key], root)
            changed |= rel != meta[key]
            meta[key] = rel
    if changed:
        write_text(notebook, nbformat.writes(nb))


_KERNEL_DIED = "Kernel died before replying to kernel_info"
KERNEL_START_TRIES = 3


def _execute(execute: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """papermill's execute_notebook, started again when the kernel died before it answered (no cell had run): two
    kernels started at once, as `dvc queue start -j 2` does, can be handed the same free TCP port by jupyter_client,
    and the second dies with "Address already in use". Any other failure is raised at once."""
    for attempt in range(1, KERNEL_START_TRIES + 1):
        try:
            execute(*args, **kwargs)
            return
        except RuntimeError as exc:
            if _KERNEL_DIED not in str(exc) or attempt == KERNEL_START_TRIES:
                raise
            print(f"the kernel died as it started ({exc}); starting another, try {attempt + 1} of "
                  f"{KERNEL_START_TRIES}", file=sys.stderr)  # fmt: skip
            time.sleep(0.5 * attempt)


def run_stage(name: str, params_file: str | Path = "params.yaml", root: str | Path | None = None) -> Path:
    """Validate params, then execute the stage notebook with papermill.

    Args:
        name: a key of STAGES.
        params_file: params.yaml to validate and inject (relative to root).
        root: the project root (default: found from cwd).

    Returns:
        The executed notebook under reports/notebooks/ (the stage's headline figures are in reports/metrics/).

    Raises:
        ParamsError: params invalid (nothing runs).
        UnknownParameterError: the notebook does not declare an injected parameter.
        NotebookError: a cell raised; the partial notebook is kept.
    """
    if name not in STAGES:
        raise KitError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    root = Path(root) if root else project_root()
    stage = STAGES[name]
    params = load_params(root / params_file)  # before anything heavy is imported or started

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = root / stage.notebook
    parameters = stage_parameters(stage, params)
    declared = list(pm.inspect_notebook(str(notebook)).keys())
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise UnknownParameterError(notebook, unknown, declared)

    output = root / OUTPUT_DIR / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)

    pm_log = logging.getLogger("papermill")
    handler = _RawHandler()
    pm_log.addHandler(handler)
    pm_log.setLevel(logging.INFO)
    pm_log.propagate = False
    # Fewer, ASCII progress updates read well both in the executed notebook and in a CI log.
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    os.environ.setdefault("TQDM_NCOLS", "100")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel's text output is streamed to this console (log_output); a widget bar would show nothing here and
    # leave no state in the executed notebook, so the kit's bars print lines (kit.core.progress).
    os.environ.setdefault(PROGRESS_ENV, "text")
    # The libraries' sub-second bars (loading weights, writing shards) would only crowd the stage's own lines.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    kernels = _kernel_dir()
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [kernels.name, os.environ.get("JUPYTER_PATH")]))
    start = time.perf_counter()
    try:
        _execute(
            pm.execute_notebook,
            str(notebook),
            str(output),
            parameters=parameters,
            cwd=str(root),
            kernel_name="kit",
            progress_bar=True,
            log_output=True,
            request_save_on_cell_execute=True,
        )
    except PapermillExecutionError as exc:
        raise NotebookError(name, output, exc.cell_index, exc.ename, exc.evalue) from None
    finally:
        pm_log.removeHandler(handler)
        kernels.cleanup()
        if output.is_file():
            _relative_metadata(output, root)
    # The handful of figures `dvc metrics show` / `dvc exp show` compare, out of the detailed report just written.
    if name in HEADLINES:  # a stage without headline figures (a probe notebook) has no metrics file
        write_headline(name, root)
        write_stage_time(name, root, time.perf_counter() - start)
    print(f"stage {name!r} done in {time.perf_counter() - start:.1f}s -> {output.relative_to(root)}", file=sys.stderr)
    return output
