"""The monitor stage's report (MonitorReport, reports/monitor.json): the reference and its calibration, each replayed
scenario window by window (verdict, statistics against thresholds, class shares, realized macro-F1), and the costs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from kit.core.reports import StageReport

__all__ = [
    "WindowResult",
    "ScenarioResult",
    "ReferenceSummary",
    "LogSummary",
    "OverheadRun",
    "LoggingOverhead",
    "EmbeddingCost",
    "MonitorReport",
]


class WindowResult(BaseModel):
    """One replayed window as the monitor judged it from the prediction log."""

    index: int
    shifted_share: float  # share of its texts drawn from the shifted source (0 for the control)
    status: Literal["drift", "no drift", "not enough data"]
    rows: int
    level: float  # per-feature p-value level after multiple-testing control
    scores: dict[str, float]  # feature -> statistic (p-value for tests, distance for MMD^2 and the like)
    thresholds: dict[str, float]  # feature -> calibrated statistic boundary at `level`
    p_values: dict[str, float]  # feature -> empirical p-value against the calibration's null windows
    drifted: list[str]
    class_shares: dict[str, float]
    macro_f1: float | None = None  # realized, on the delayed labels that arrived for this window
    labelled_rows: int = 0


class ScenarioResult(BaseModel):
    """A scenario's windows and what they add up to: detected or not, after how many windows, false alarms."""

    name: str
    description: str
    shift_starts_at: int | None  # None for the control
    source: dict[str, str | float | int | None] = Field(default_factory=dict)  # what the shift was built from
    windows: list[WindowResult]
    detected: bool | None  # None for the control
    detection_delay: int | None  # windows from the first shifted one to the first drift verdict
    detection_rate: float | None  # share of shifted windows judged drift
    false_alarms: int  # drift verdicts on unshifted windows
    unshifted_windows: int
    evidently_html: str | None  # project-relative Evidently report of the first drift window (none: the last)


class ReferenceSummary(BaseModel):
    """The reference profile the windows were judged against (stored as a DVC output)."""

    path: str
    split: str
    rows: int
    anchor_rows: int
    embedding_dim: int | None
    method: Literal["bh", "bonferroni"]
    target: float
    window_size: int
    null_windows: int
    null_false_alarm_rate: float  # the calibration replay's own rate under the decision rule
    thresholds: dict[str, float]
    seconds: float


class LogSummary(BaseModel):
    """The prediction log the windows were read from, and the delayed labels joined to it."""

    path: str
    files: int
    records: int
    corrupt_lines: int
    labels_path: str
    labels: int
    labels_matched: int


class OverheadRun(BaseModel):
    """One load run of the server at the ratio concurrency."""

    logging: bool
    throughput_rps: float
    p99_ms: float | None
    errors: int


class LoggingOverhead(BaseModel):
    """Server throughput with the prediction log on against off, measured alternately in one run."""

    concurrency: int
    duration_s: float
    runs: list[OverheadRun]
    off_rps: float  # median over the runs
    on_rps: float
    ratio: float  # median of the back-to-back pairs' on / off; the goal is >= 0.95
    pair_ratios: list[float] = []  # on / off of each back-to-back pair, in run order (which goes first alternates)
    records_written: int
    records_dropped: int


class EmbeddingCost(BaseModel):
    """What embedding drift costs per 1,000 texts: the extra graph output in the server and MMD^2 per window."""

    dim: int
    mmd_ms_per_1000: float
    reference_rows: int


class MonitorReport(StageReport):
    """reports/monitor.json: reference, scenarios (control first), logging overhead, embedding cost, machine."""

    stage: Literal["monitor"] = "monitor"
    model_version: str
    model_variant: str
    reference: ReferenceSummary
    log: LogSummary
    scenarios: list[ScenarioResult]
    control_false_alarm_rate: float
    control_windows: int
    detection: dict[str, int | None]  # scenario -> detection delay in windows (None: not detected)
    logging_overhead: LoggingOverhead | None
    embedding_cost: EmbeddingCost | None
    ops_files: list[str] = []  # alert rules, rule tests, dashboard and provisioning (project-relative)
    plots: list[str] = []
    machine: dict[str, str] = {}
    warnings: list[str] = []
