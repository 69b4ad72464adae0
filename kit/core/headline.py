"""Headline figures: the handful of numbers per stage that `dvc metrics show`, `dvc exp show` and the docs home page
compare, taken from the stage's detailed report and written to reports/metrics/<stage>.json (flat name -> number)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kit.core.errors import ReportError
from kit.core.io import write_text
from kit.core.layout import LAYOUT

__all__ = [
    "HeadlineFigure",
    "HEADLINES",
    "REPORT_FILES",
    "headline_values",
    "read_headlines",
    "read_stage_times",
    "write_headline",
    "write_stage_time",
]

METRICS_DIR = LAYOUT.metrics_dir

# The detailed report each stage writes (an output, not a DVC metrics file: hundreds of keys).
REPORT_FILES: dict[str, str] = {
    "data": LAYOUT.data_report,
    "finetune": LAYOUT.train_report,
    "optimize": LAYOUT.bench_report,
    "deploy": LAYOUT.serve_report,
    "monitor": LAYOUT.monitor_report,
    "cost": LAYOUT.cost_report,
}


class HeadlineFigure(BaseModel):
    """One headline number of one stage, as the home page and `kit` print it."""

    stage: str
    name: str
    label: str
    value: float
    unit: str


@dataclass(frozen=True)
class _Spec:
    name: str  # short: it is a column header of `dvc exp show`
    label: str
    unit: str  # "" (plain number), "pts" (percentage points), "x" (ratio), "ms", "rps", "usd", "share", "count"
    get: Callable[[dict[str, Any]], Any]


def _at(path: str) -> Callable[[dict[str, Any]], Any]:
    """A getter for a dotted path into the report's JSON."""

    def get(report: dict[str, Any]) -> Any:
        node: Any = report
        for key in path.split("."):
            node = node[key]
        return node

    return get


def _shifts(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in report["scenarios"] if s["name"] != "control"]


def _serving_size_mb(report: dict[str, Any]) -> float:
    sizes = {v["name"]: v["size_mb"] for v in report["variants"]}
    return sizes[report["headline"]["variant"]]  # a KeyError names the variant missing from `variants`


HEADLINES: dict[str, tuple[_Spec, ...]] = {
    "data": (_Spec("rows", "rows after cleaning", "count", _at("rows.total")),),
    "finetune": (
        _Spec("f1", "test macro-F1, fine-tuned", "", _at("model.macro_f1")),
        _Spec("base_f1", "test macro-F1, TF-IDF baseline", "", _at("baseline.macro_f1")),
        _Spec("gain_pts", "gain over the baseline", "pts", lambda r: 100 * r["macro_f1_gain"]),
    ),
    "optimize": (
        _Spec("speedup_b32", "serving model vs PyTorch, batch 32", "x", _at("headline.throughput_ratio")),
        _Spec("speedup_b1", "serving model vs PyTorch, batch 1", "x", _at("headline.latency_ratio")),
        _Spec("f1_drop_pts", "macro-F1 lost by the serving model", "pts", _at("headline.macro_f1_drop_points")),
        # Absolute accuracy, latency and size of the served variant: the axes `kit sweep report` compares runs on.
        _Spec("serve_f1", "test macro-F1, serving model", "", _at("headline.macro_f1")),
        _Spec("p50_ms", "serving model p50 latency, batch 1", "ms", _at("headline.p50_latency_ms")),
        _Spec("size_mb", "serving model file size", "MB", _serving_size_mb),
    ),
    "deploy": (
        _Spec("rps", "server throughput per pod", "rps", _at("best_throughput_rps")),
        _Spec("p99_ms", "p99 latency there", "ms", _at("p99_ms_at_ratio")),
        _Spec("of_bare", "server / bare model", "x", _at("server_over_bare")),
    ),
    "monitor": (
        _Spec("detected", "shifts detected", "count", lambda r: sum(bool(s["detected"]) for s in _shifts(r))),
        _Spec("shifts", "shifts replayed", "count", lambda r: len(_shifts(r))),
        _Spec("false_alarm", "false alarms on the control", "share", _at("control_false_alarm_rate")),
    ),
    "cost": (
        _Spec("usd_per_1m", "$ per 1M predictions (recommended option)", "usd", _at("recommendation.usd_per_million")),
        _Spec("usd_month", "$ per month at the planned traffic", "usd", _at("recommendation.monthly_usd")),
    ),
}


def headline_values(stage: str, report: dict[str, Any], source: str = "report") -> dict[str, float]:
    """The stage's headline figures out of its detailed report's JSON.

    Raises:
        ReportError: the report lacks a field a figure is read from (names the figure).
    """
    out: dict[str, float] = {}
    for spec in HEADLINES[stage]:
        try:
            value = spec.get(report)
        except (KeyError, TypeError, IndexError) as exc:
            raise ReportError(Path(source), f"headline figure {stage}.{spec.name} is missing ({exc!r})") from None
        if value is not None:  # e.g. the baseline gain of a non-main torchrun rank
            out[spec.name] = round(float(value), 4)
    return out


def write_headline(stage: str, root: str | Path) -> Path:
    """Write reports/metrics/<stage>.json from the stage's detailed report (called once the stage has run)."""
    root = Path(root)
    source = root / REPORT_FILES[stage]
    if not source.is_file():
        raise ReportError(source, f"not found: the {stage} stage writes it")
    values = headline_values(stage, json.loads(source.read_text()), REPORT_FILES[stage])
    return write_text(root / METRICS_DIR / f"{stage}.json", json.dumps(values, indent=2, sort_keys=True) + "\n")


def read_headlines(root: str | Path) -> list[HeadlineFigure]:
    """Every stage's headline figures in pipeline order, from the metrics files present (none when not yet run)."""
    root = Path(root)
    figures: list[HeadlineFigure] = []
    for stage, specs in HEADLINES.items():
        path = root / METRICS_DIR / f"{stage}.json"
        if not path.is_file():
            continue
        values = json.loads(path.read_text())
        figures += [
            HeadlineFigure(stage=stage, name=s.name, label=s.label, value=values[s.name], unit=s.unit)
            for s in specs
            if s.name in values
        ]
    return figures


def write_stage_time(stage: str, root: str | Path, seconds: float) -> Path:
    """Record the stage's wall time under `kit run` in reports/timings/<stage>.json (an output, not a metric: it
    changes on every run and would crowd `dvc exp show`)."""
    text = json.dumps({"seconds": round(seconds, 1), "stage": stage}, indent=2, sort_keys=True) + "\n"
    return write_text(Path(root) / LAYOUT.timings_dir / f"{stage}.json", text)


def read_stage_times(root: str | Path) -> dict[str, float]:
    """Each stage's last wall time in pipeline order, for the stages that have one."""
    root = Path(root)
    out: dict[str, float] = {}
    for stage in HEADLINES:
        path = root / LAYOUT.timings_dir / f"{stage}.json"
        if path.is_file():
            out[stage] = float(json.loads(path.read_text())["seconds"])
    return out
