"""Typed stage reports: one pydantic model per reports/*.json, written by its stage and read back by later ones.
Reading checks the file against the model, so a missing field or a report from an older kit is one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kit.core.errors import ReportError
from kit.core.io import write_text

__all__ = ["StageReport", "read_report", "write_report"]

R = TypeVar("R", bound="StageReport")


class StageReport(BaseModel):
    """Base of every stage report: strict about the fields it names, tolerant of extra detail sections.

    `schema_version` changes when a field is renamed or removed; a report of another version is stale."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = 1
    stage: str


def write_report(path: str | Path, report: StageReport) -> Path:
    """Write `report` as sorted, indented JSON (atomically), so reruns diff cleanly and `dvc metrics` reads it."""
    text = json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=True) + "\n"
    return write_text(path, text)


def read_report(path: str | Path, model: type[R]) -> R:
    """Read a stage report, checked against `model`.

    Raises:
        ReportError: the file is missing (run the stage that writes it), is not JSON, is of another schema
            version (stale: rerun its stage), or lacks a field; the message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(path, "not found: run the stage that writes it first (`dvc repro`)")
    try:
        raw: Any = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(path, f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ReportError(path, "top level must be a JSON object")
    want = model.model_fields["schema_version"].default
    got = raw.get("schema_version")
    if got != want:
        raise ReportError(path, f"stale report (schema_version {got!r}, this kit reads {want}): rerun its stage")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ReportError(path, f"{where}: {first['msg'].lower()}{more}") from None


# Each stage's report model follows under its own heading (kept apart so the stages' edits never touch each other).

# ------------------------------------------------------------------------------------------------------ data
# (DataReport: reports/data.json)


# -------------------------------------------------------------------------------------------------- finetune
# (TrainReport: reports/train.json)


# -------------------------------------------------------------------------------------------------- optimize
# (BenchReport: reports/bench.json)


# ---------------------------------------------------------------------------------------------------- deploy
# (ServeReport: reports/serve.json)
