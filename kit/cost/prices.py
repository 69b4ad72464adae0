"""The price sheet (cost/prices.yaml): instance, serverless-function and scale-to-zero rows, each with its source.
Reading validates every row; the first bad one is a one-line CostError naming the file, row and column."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kit.cost.errors import CostError

__all__ = ["InstancePrice", "FunctionPrice", "ScaleToZero", "PriceSheet", "read_prices", "DEFAULT_PRICES"]

DEFAULT_PRICES = Path("cost/prices.yaml")


class _Row(BaseModel):
    """A sheet row: unknown columns are errors (a typo must not silently drop a price); source and date required."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    source: str = Field(min_length=3)
    date: dt.date


class InstancePrice(_Row):
    """One instance type: its shape and hourly prices on demand and on spot (None: no spot market for it)."""

    provider: str
    region: str
    arch: Literal["x86_64", "arm64"]
    cpu: str
    vcpu: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpu: int = Field(ge=0)
    on_demand_usd_h: float = Field(gt=0)
    spot_usd_h: float | None = Field(default=None, gt=0)
    spot_interruption_per_month: float | None = Field(default=None, ge=0, lt=1)


class FunctionPrice(_Row):
    """A serverless function model billed per request and per GB-second, with its monthly free tier."""

    provider: str
    region: str
    usd_per_million_requests: float = Field(ge=0)
    usd_per_gb_s: float = Field(ge=0)
    memory_mb: int = Field(gt=0)
    vcpu: float = Field(gt=0)  # the CPU share the memory size buys
    free_requests_per_month: float = Field(default=0, ge=0)
    free_gb_s_per_month: float = Field(default=0, ge=0)


class ScaleToZero(_Row):
    """A scale-to-zero autoscaler's settings (Knative KPA names)."""

    min_scale: int = Field(ge=0)
    stable_window_s: float = Field(gt=0)
    grace_period_s: float = Field(ge=0)


_TABLES: dict[str, type[_Row]] = {"instances": InstancePrice, "serverless": FunctionPrice, "scale_to_zero": ScaleToZero}


class PriceSheet(BaseModel):
    """The whole sheet; look rows up by name with `instance`, `function`, `scale_to_zero_model`."""

    model_config = ConfigDict(frozen=True)

    path: str
    instances: list[InstancePrice]
    serverless: list[FunctionPrice]
    scale_to_zero: list[ScaleToZero]

    def instance(self, name: str) -> InstancePrice:
        return _pick(self.instances, name, "instances", self.path)

    def function(self, name: str) -> FunctionPrice:
        return _pick(self.serverless, name, "serverless", self.path)

    def scale_to_zero_model(self, name: str) -> ScaleToZero:
        return _pick(self.scale_to_zero, name, "scale_to_zero", self.path)


def _pick(rows: list[Any], name: str, table: str, path: str) -> Any:
    for row in rows:
        if row.name == name:
            return row
    raise CostError(f"{path}: no row named {name!r} in {table} (rows: {', '.join(r.name for r in rows)})")


def _row_lines(text: str) -> dict[str, list[int]]:
    """1-based line of each row of each table, from the YAML node tree, so an error can point into the file."""
    root = yaml.compose(text)
    lines: dict[str, list[int]] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(value, yaml.SequenceNode):
                lines[key.value] = [item.start_mark.line + 1 for item in value.value]
    return lines


def _row_error(path: Path, table: str, index: int, *, line: int | None, exc: ValidationError) -> CostError:
    first = exc.errors()[0]
    column = ".".join(str(p) for p in first["loc"]) or "(row)"
    msg = first["msg"].lower()
    if first["type"] == "extra_forbidden":
        msg = "unknown column"
    elif first["type"] == "missing":
        msg = "missing (every row needs it)"
    where = f"line {line}, " if line else ""
    return CostError(f"{path}: {where}{table} row {index + 1}, column {column!r}: {msg}")


def read_prices(path: str | Path = DEFAULT_PRICES) -> PriceSheet:
    """Read and validate a price sheet.

    Args:
        path: the YAML file (tables `instances`, `serverless`, `scale_to_zero`).

    Returns:
        The validated sheet.

    Raises:
        CostError: missing file, not YAML, an unknown or missing table, or a bad row (file, line, row, column).
    """
    path = Path(path)
    if not path.is_file():
        raise CostError(f"{path}: price sheet not found")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
        lines = _row_lines(text)
    except yaml.YAMLError as exc:
        raise CostError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise CostError(f"{path}: top level must be a mapping of tables ({', '.join(_TABLES)})")
    unknown = sorted(set(raw) - set(_TABLES))
    if unknown:
        raise CostError(f"{path}: unknown table {unknown[0]!r} (tables: {', '.join(_TABLES)})")
    tables: dict[str, list[_Row]] = {}
    for table, model in _TABLES.items():
        rows = raw.get(table)
        if not isinstance(rows, list) or not rows:
            raise CostError(f"{path}: table {table!r} is missing or empty (a list of rows)")
        tables[table] = []
        for i, row in enumerate(rows):
            line = lines.get(table, [None] * len(rows))[i]
            if not isinstance(row, dict):
                raise CostError(f"{path}: line {line}, {table} row {i + 1}: a row is a mapping of column: value")
            try:
                tables[table].append(model.model_validate(row))
            except ValidationError as exc:
                raise _row_error(path, table, i, line=line, exc=exc) from None
        names = [r.name for r in tables[table]]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise CostError(f"{path}: {table} has two rows named {dup!r}")
    return PriceSheet.model_validate({"path": str(path), **tables})
