"""The kit's exception family: every error a user can cause names what is wrong and where.
CLI commands catch `KitError`, print its message and exit non-zero; anything else is a bug and keeps its traceback."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "KitError",
    "ParamsError",
    "DataError",
    "NotebookError",
    "UnknownParameterError",
    "QualityGateError",
    "DeployError",
    "ClusterUnavailableError",
    "ModelDirError",
    "ParityError",
    "TrainingInterrupted",
    "ReportError",
]


class KitError(Exception):
    """Base of all errors the kit raises on purpose."""


class ParamsError(KitError):
    """params.yaml does not match the schema; `lines` holds one `key.path: message` per problem."""

    def __init__(self, path: str | Path, lines: list[str]):
        self.path = Path(path)
        self.lines = lines
        super().__init__(f"{self.path}: {len(lines)} error(s)\n" + "\n".join(lines))


class DataError(KitError):
    """Input data is unusable: names the file and the column or rows at fault."""


class UnknownParameterError(KitError):
    """papermill would inject a parameter that the notebook's `parameters` cell does not declare."""

    def __init__(self, notebook: str | Path, unknown: list[str], declared: list[str]):
        self.notebook, self.unknown, self.declared = Path(notebook), unknown, declared
        super().__init__(
            f"{self.notebook}: parameters cell does not declare {', '.join(unknown)} "
            f"(declared: {', '.join(declared) or 'nothing'})"
        )


class NotebookError(KitError):
    """A cell of a stage notebook raised; carries the cell and where the partial output notebook is."""

    def __init__(self, stage: str, output: str | Path, cell_index: int | None, ename: str, evalue: str):
        self.stage, self.output, self.cell_index, self.ename, self.evalue = (
            stage,
            Path(output),
            cell_index,
            ename,
            evalue,
        )
        where = f"cell {cell_index}" if cell_index is not None else "a cell"
        super().__init__(
            f"stage {stage!r} failed in {where}: {ename}: {evalue}\npartial output notebook: {self.output}"
        )


class QualityGateError(KitError):
    """A metric fell below the gate set in params; the artefacts are still written for inspection."""


class DeployError(KitError):
    """Rendering, validating, scanning or applying the deployment failed (names the manifest or file at fault)."""


class ClusterUnavailableError(DeployError):
    """No Kubernetes cluster to talk to: no kubeconfig / in-cluster config, or the API server is unreachable."""


class ModelDirError(KitError):
    """The serving model dir is missing a file or holds one that cannot be read (names the file and the problem)."""


class ParityError(KitError):
    """An exported ONNX graph's logits differ from PyTorch's beyond the tolerance (gives the max difference)."""

    def __init__(self, path: str | Path, max_diff: float, tolerance: float, detail: str = ""):
        self.path, self.max_diff, self.tolerance = Path(path), max_diff, tolerance
        super().__init__(
            f"{self.path}: ONNX Runtime logits differ from PyTorch by up to {max_diff:.3g} "
            f"(tolerance {tolerance:.3g})" + (f"; {detail}" if detail else "")
        )


class TrainingInterrupted(KitError):
    """Training stopped on SIGTERM after writing a checkpoint; rerunning the stage resumes from it."""

    def __init__(self, step: int, checkpoint: str | Path):
        self.step, self.checkpoint = step, Path(checkpoint)
        super().__init__(
            f"training interrupted by SIGTERM at step {step}; checkpoint written to {self.checkpoint} "
            "(rerun the stage to resume from it)"
        )


class ReportError(KitError):
    """A stage report (reports/*.json) is missing, stale or lacks a field another stage needs; names file and field."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{self.path}: {problem}")
