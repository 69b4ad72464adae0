"""Headline figures: every stage's few comparable numbers come out of its committed report, reach the metrics files
DVC declares, and a report lacking a field is one clear error naming the figure."""

from __future__ import annotations

import json
import shutil

import pytest

from kit.core.errors import ReportError
from kit.core.headline import (
    HEADLINES,
    REPORT_FILES,
    headline_values,
    read_headlines,
    read_stage_times,
    write_headline,
    write_stage_time,
)
from tests.conftest import REPO


def test_every_stage_headline_resolves_in_the_committed_reports(tmp_path):
    (tmp_path / "reports").mkdir()
    for stage, report in REPORT_FILES.items():
        shutil.copy(REPO / report, tmp_path / report)
        write_headline(stage, tmp_path)
        values = json.loads((tmp_path / "reports" / "metrics" / f"{stage}.json").read_text())
        assert sorted(values) == sorted(s.name for s in HEADLINES[stage]), stage
        assert all(isinstance(v, float) for v in values.values())
    figures = read_headlines(tmp_path)
    assert [f.stage for f in figures][0] == "data" and [f.stage for f in figures][-1] == "cost"
    train = json.loads((REPO / "reports" / "train.json").read_text())
    gain = next(f for f in figures if f.stage == "finetune" and f.name == "gain_pts")
    assert gain.value == pytest.approx(100 * train["macro_f1_gain"], abs=1e-3) and gain.unit == "pts"
    detected = next(f for f in figures if f.name == "detected").value
    monitor = json.loads((REPO / "reports" / "monitor.json").read_text())
    assert detected == sum(s["detected"] for s in monitor["scenarios"] if s["name"] != "control")


def test_a_report_without_a_headline_field_names_the_figure():
    report = json.loads((REPO / "reports" / "serve.json").read_text())
    del report["p99_ms_at_ratio"]
    with pytest.raises(ReportError, match=r"reports/serve.json.*headline figure deploy.p99_ms is missing"):
        headline_values("deploy", report, "reports/serve.json")


def test_no_metrics_files_means_no_headlines(tmp_path):
    assert read_headlines(tmp_path) == []


def test_stage_times_round_trip_in_pipeline_order(tmp_path):
    assert read_stage_times(tmp_path) == {}
    write_stage_time("cost", tmp_path, 17.96)
    write_stage_time("data", tmp_path, 4.04)
    assert list(read_stage_times(tmp_path).items()) == [("data", 4.0), ("cost", 18.0)]
