"""Typed stage reports: one pydantic model per reports/*.json, written by its stage and read back by later ones.
Reading checks the file against the model, so a missing field or a report from an older kit is one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kit.core.errors import ReportError
from kit.core.io import write_text

__all__ = [
    "read_report",
    "write_report",
    "StageReport",
    "LengthStats",
    "DataReport",
    "DataStorage",
    "ClassScores",
    "ModelScores",
    "BaselineScores",
    "TrainData",
    "TrainRun",
    "QualityGate",
    "TrainReport",
    "BenchHeadline",
    "BenchSelection",
    "BenchReport",
    "StepTime",
    "StepTimings",
    "ServedModel",
    "ServeConfigUsed",
    "LoadTestConfig",
    "ColdStart",
    "Resources",
    "Shutdown",
    "BareRate",
    "BareModel",
    "Goal",
    "ManifestCheck",
    "ServeReport",
]

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


class LengthStats(BaseModel):
    """Characters per text in one split, after cleaning."""

    mean: float
    p50: int
    p95: int
    max: int


class DataStorage(BaseModel):
    """How the data stage read and wrote beyond the defaults: engine, source table version, extra split copy."""

    engine: str = "pandas"
    source_version: int | None = None  # the Delta table version read (pinned or the latest at run time)
    table_format: str | None = None  # parquet_dataset or delta: the extra copy of the splits
    table_path: str | None = None
    table_version: int | None = None  # the Delta version this run wrote


class DataReport(StageReport):
    """reports/data.json: what the data stage read, dropped and wrote; splits are train, validation, test.

    `length_histogram` (texts per character count, the last bin holding longer ones) is returned for the plots but
    not written; `outputs` names the files written, relative to the project root."""

    stage: Literal["data"] = "data"
    source: str
    labels: list[str]
    rows_read: int
    rows_dropped_too_short: int
    duplicates_dropped: int
    rows: dict[str, int]  # per split, plus "total"
    class_balance: dict[str, dict[str, int]]  # split -> label -> rows
    text_chars: dict[str, LengthStats]
    text_words_mean: dict[str, float]
    outputs: dict[str, str] = {}
    # Only written when set (engine spark, a Delta/dataset source or copy), so default reports stay as they were.
    storage: DataStorage | None = Field(None, exclude_if=lambda v: v is None)
    length_histogram: dict[str, list[int]] = Field(default_factory=dict, exclude=True)


# -------------------------------------------------------------------------------------------------- finetune
# (TrainReport: reports/train.json)
class _TrainPart(BaseModel):
    """A section of the train report: named fields checked, further detail kept as it came."""

    model_config = ConfigDict(extra="allow")


class ClassScores(_TrainPart):
    precision: float
    recall: float
    f1: float
    support: int


class ModelScores(_TrainPart):
    """A model's scores on the whole test split (kit.core.metrics.classification_metrics less the confusion)."""

    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]


class BaselineScores(ModelScores):
    fit_time_s: float


class TrainData(_TrainPart):
    train_rows: int
    train_rows_available: int
    validation_rows: int
    test_rows: int
    train_class_counts: dict[str, int]


class TrainRun(_TrainPart):
    """How training went: steps, early stop, best checkpoint, resume, speed and the run's fingerprint."""

    base_model: str
    steps: int
    max_steps: int
    epochs: float
    stopped_early: bool
    best_step: int | None
    best_val_macro_f1: float | None
    val_evaluations: int
    resumed_from_step: int | None
    train_time_s: float
    train_samples_per_s: float
    test_time_s: float
    test_samples_per_s: float
    processes: int
    threads_per_process: int
    fingerprint: str
    stage_time_s: float | None = None  # set by the main process once every output is written
    checkpoint_write_s: float | None = None  # median seconds per checkpoint save (None: none written)


class QualityGate(_TrainPart):
    """Both gates of the finetune stage: an absolute macro-F1 floor and a gain over the baseline (points)."""

    min_macro_f1: float
    min_gain_over_baseline: float | None = None
    passed: bool


class TrainReport(StageReport):
    """reports/train.json: the fine-tuned model beside the TF-IDF baseline on the test split, and the run's facts.

    `baseline` and `macro_f1_gain` are filled by the main process only (other torchrun ranks return None).
    `history` (the Trainer's log) and `confusion` (model name -> matrix) are returned but not written."""

    stage: Literal["finetune"] = "finetune"
    labels: list[str]
    data: TrainData
    model: ModelScores
    baseline: BaselineScores | None = None
    macro_f1_gain: float | None = None
    train: TrainRun
    gate: QualityGate
    outputs: dict[str, str]  # relative to the project root
    history: list[dict[str, Any]] = Field(default_factory=list, exclude=True)
    confusion: dict[str, list[list[int]]] = Field(default_factory=dict, exclude=True)


# -------------------------------------------------------------------------------------------------- optimize
# (BenchReport: reports/bench.json)
class BenchHeadline(BaseModel):
    """The optimize stage's target figures for the served variant (ratios over the PyTorch reference, same run).

    Throughput is taken at the largest benchmarked batch and p50 latency at the smallest, both at the first sequence
    length; the batch sizes are fields, not part of the keys, so the keys stay the same whatever the grid."""

    variant: str
    seq_len: int
    throughput_batch_size: int
    throughput_ratio: float
    throughput_seq_s: float
    reference_throughput_seq_s: float
    latency_batch_size: int
    latency_ratio: float
    p50_latency_ms: float
    reference_p50_latency_ms: float
    macro_f1: float
    reference_macro_f1: float
    macro_f1_drop_points: float
    target_ratio: float
    meets_throughput_target: bool
    meets_latency_target: bool
    meets_f1_target: bool


class BenchSelection(BaseModel):
    """Which variant is served and why; `version` is the serving dir's content hash (selection.json has the same)."""

    variant: str
    reason: str
    qualified: bool
    version: str


class StepTime(BaseModel):
    """One step of a stage run and the seconds it took."""

    name: str
    seconds: float


class StepTimings(BaseModel):
    """Where a stage's time went: each step's seconds, in the order they ran, and the whole stage's seconds."""

    steps: list[StepTime]
    total_s: float


class BenchReport(StageReport):
    """reports/bench.json: headline and selection typed; the bulky parts as the benchmark and evaluation return them.

    Paths inside (variants, benchmark rows, plots) are relative to the project root."""

    stage: str = "optimize"
    headline: BenchHeadline
    selection: BenchSelection
    candidates: list[dict[str, Any]]  # per variant: speedup, macro_f1, f1_drop, qualifies (fastest first)
    accuracy: dict[str, dict[str, Any]]  # runner name -> accuracy, macro_f1, agreement, rows
    variants: list[dict[str, Any]]  # built files: name, path, size, kind, parity, notes
    distill: dict[str, Any] | None  # the student's distillation summary (None: no student asked for)
    benchmark: dict[str, Any]  # machine, settings, reference, results (variant x batch x length), rounds
    plots: dict[str, str]  # figure name -> PNG path
    timings: StepTimings | None = None  # seconds per step of the stage run that wrote it


# ---------------------------------------------------------------------------------------------------- deploy
# (ServeReport: reports/serve.json)


class _Part(BaseModel):
    """A section of the serve report: its named fields are checked, any further detail is kept as it came."""

    model_config = ConfigDict(extra="allow")


class ServedModel(_Part):
    dir: str  # relative to the project root
    variant: str
    version: str
    size_mib: float
    max_length: int


class ServeConfigUsed(_Part):
    max_batch_size: int
    max_delay_ms: float
    batch_wait: str
    threads: int


class LoadTestConfig(_Part):
    serve: ServeConfigUsed
    concurrency_levels: list[int]
    nobatch_levels: list[int]
    duration_s: float
    warmup_s: float
    texts: int
    texts_path: str  # relative to the project root
    cpu_count: int | None
    load_avg_1m_before: float
    load_avg_1m_after: float
    client: str


class ColdStart(_Part):
    ready_s: float
    first_request_ms: float
    nobatch_ready_s: float


class Resources(_Part):
    rss_peak_mib: float | None
    cpu_peak_cores: float | None
    cpu_cores_at_ratio: float | None
    client_cpu_cores_at_ratio: float | None


class Shutdown(_Part):
    exit_code: int | None  # None: killed after the grace period
    stop_s: float


class BareRate(_Part):
    """The bare model at one batch size (texts of similar length batched together when `bucketing`): its runs and
    their mean rate (texts/s)."""

    batch_size: int
    bucketing: bool = False
    runs: list[dict[str, Any]]
    throughput_rps: float | None


class BareModel(BareRate):
    """The ceiling: the best rate over batch sizes and bucketing (its configuration in the inherited fields), with the
    unbatched (batch size 1) rate beside it and every configuration measured in `grid`."""

    unbatched: BareRate
    batch_over_unbatched: float | None
    grid: list[BareRate] = []


class Goal(_Part):
    """One goal of the load test: its target, the measured value (None: not measured), met or not, and where."""

    name: str
    target: str
    threshold: float
    value: float | None
    met: bool
    where: str


class ManifestCheck(_Part):
    """The rendered manifests and their offline validation (files relative to the project root)."""

    dir: str
    files: list[str]
    ok: bool
    lines: list[str]
    schema_rows: list[dict[str, Any]]


class ReplicaArm(_Part):
    """The server's cores split into pinned replicas, measured beside the single server (kit.deploy.replicas)."""

    replicas: int
    threads_per_replica: int
    cores: list[list[int]]
    levels: list[dict[str, Any]]
    over_single: list[dict[str, Any]]
    best_rps_within_p99: float | None
    best_concurrency: int | None
    replicas_over_bare: float | None


class ServeReport(StageReport):
    """reports/serve.json: the load test of `kit serve` (deploy stage); sizes the manifests, read by the cost stage.

    A figure that depends on a batch size keeps that batch size beside it (`bare.batch_size`,
    `bare.unbatched.batch_size`), so no key names one."""

    stage: Literal["deploy"] = "deploy"
    model: ServedModel
    config: LoadTestConfig
    ratio_concurrency: int
    ratio_concurrency_rule: str = ""  # how the plan chose ratio_concurrency
    sustainable_concurrency: int | None
    throughput_per_pod_rps: float
    bare_throughput_rps: float | None
    server_over_bare: float | None
    p99_ms_at_ratio: float | None
    p99_target_ms: float
    best_throughput_rps: float
    batching_over_nobatch: float | None
    nobatch_over_bare_unbatched: float | None
    targets: dict[str, bool]
    goals: list[Goal] = []
    wall_s: float | None = None  # the deploy stage's own time, load test to validated manifests
    cold_start: ColdStart
    resources: Resources
    shutdown: dict[str, Shutdown]
    bare: BareModel
    smoke_test: dict[str, Any]
    levels: list[dict[str, Any]]
    nobatch_levels: list[dict[str, Any]]
    batching_gain: list[dict[str, Any]]
    replicas: ReplicaArm | None = None
    plots: list[str] = []
    manifests: ManifestCheck | None = None
