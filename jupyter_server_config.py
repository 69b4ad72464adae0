"""JupyterLab settings for this project (`make lab` passes them with --config): notebooks are saved without outputs,
execution counts or volatile metadata, so a notebook run by hand leaves Git and DVC clean.

The executed copies with their outputs are the pipeline's: reports/notebooks/, written by `dvc repro`."""

from __future__ import annotations

from typing import Any

_NOTEBOOK_METADATA = ("kernelspec", "language_info")  # what the committed notebooks keep
_CELL_METADATA = ("tags",)  # the `parameters` tag papermill injects after


def strip_outputs(model: dict[str, Any], **kwargs: Any) -> None:
    """pre_save_hook: drop outputs, execution counts and every metadata key but the kept ones, in place."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    nb = model["content"]
    nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in _NOTEBOOK_METADATA}
    for cell in nb.get("cells", []):
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in _CELL_METADATA}
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None


c = get_config()  # type: ignore[name-defined]  # noqa: F821 - injected by Jupyter's config loader
c.ContentsManager.pre_save_hook = strip_outputs
