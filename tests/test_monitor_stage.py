"""The monitor stage on a throwaway project with a tiny served model: the reference is built and saved, every scenario
is replayed over HTTP through a real `kit serve` whose prediction log the windows are judged from, and the report,
Evidently pages, plots and ops files exist with relative paths; a foreign-language shift is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kit.core.errors import ReportError
from kit.core.layout import LAYOUT
from kit.core.params import Params, load_params
from kit.core.reports import read_report, write_report
from kit.monitor.features import MonitorError
from kit.monitor.profile import Reference
from kit.monitor.report import MonitorReport
from kit.monitor.scenarios import SCENARIOS
from kit.monitor.stage import run_monitor
from tests.conftest import REPO
from tests.fixtures_deploy import serve_report, tiny_serving_dir

WORDS = (
    "the service was good bad slow fast friendly rude price quality delivery order support staff food room "
    "great terrible okay never again always happy angry late early clean dirty cheap expensive helpful"
).split()
LABELS = ("negative", "neutral", "positive")
SMALL = {
    "window_size": 20, "min_rows": 10, "false_alarm_target": 0.05, "embedding_rows": 20, "control_windows": 6,
    "shift_windows": 3, "shift_starts_at": 1, "ramp_windows": 2, "replay_concurrency": 4,
    "overhead_duration_s": 1.0, "overhead_repeats": 2,
}  # fmt: skip


def _split(path: Path, n: int, seed: int) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(4, 16))).capitalize() + "." for _ in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": texts, "label": rng.choice(LABELS, n)}).to_parquet(path, index=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor") / "proj"
    shutil.copytree(tiny_serving_dir(), root / LAYOUT.serving_dir)
    _split(root / LAYOUT.split("validation"), 200, seed=1)
    _split(root / LAYOUT.split("test"), 200, seed=2)
    write_report(root / LAYOUT.serve_report, serve_report())
    return root


@pytest.fixture(scope="module")
def report(project: Path) -> MonitorReport:
    return run_monitor(Params(monitor=SMALL, serve={"max_batch_size": 4, "max_length": 32}), project)


def test_report_reads_back_and_names_only_relative_paths(project, report):
    assert read_report(project / LAYOUT.monitor_report, MonitorReport) == report
    text = (project / LAYOUT.monitor_report).read_text()
    assert str(project) not in text and str(REPO) not in text
    assert [s.name for s in report.scenarios] == list(SCENARIOS)
    for rel in [*report.plots, *report.ops_files, *(s.evidently_html for s in report.scenarios)]:
        assert rel and not Path(rel).is_absolute() and (project / rel).is_file(), rel
    assert {Path(p).name for p in report.ops_files} >= {"kit-alerts.rules.yml", "prometheusrule.yaml"}
    assert report.machine["isa"]


def test_every_window_is_judged_from_what_the_server_logged(project, report):
    control = report.scenarios[0]
    assert control.name == "control" and control.detected is None and report.control_windows == 6
    assert all(w.rows == SMALL["window_size"] for s in report.scenarios for w in s.windows)
    sent = sum(len(s.windows) for s in report.scenarios) * SMALL["window_size"]
    assert report.log.records >= sent and report.log.corrupt_lines == 0  # plus the server's start probe
    labels = [json.loads(line) for line in (project / LAYOUT.monitor_labels).read_text().splitlines()]
    assert report.log.labels == len(labels) > 0 and report.log.labels_matched == len(labels)
    labelled = [w for s in report.scenarios for w in s.windows if w.labelled_rows]
    assert labelled and all(w.macro_f1 is not None and 0 <= w.macro_f1 <= 1 for w in labelled)
    ref = Reference.load(project / LAYOUT.monitor_reference_dir)
    assert ref.profile.model_version == report.model_version == "test-0.1"
    assert report.reference.embedding_dim == ref.embeddings.shape[1] == 32  # the tiny BERT's pooled width
    for w in control.windows:
        assert set(w.scores) == set(w.thresholds) == set(w.p_values) >= {"length_tokens", "embedding_mmd2"}


def test_a_foreign_language_shift_is_caught_and_timed(report):
    by_name = {s.name: s for s in report.scenarios}
    vocab = by_name["vocabulary"]
    assert vocab.detected and vocab.detection_delay == 0 and report.detection["vocabulary"] == 0
    assert vocab.source["package"] == "faker" and vocab.false_alarms <= vocab.unshifted_windows
    shifted = [w for w in vocab.windows if w.shifted_share > 0]
    assert vocab.detection_rate == sum(w.status == "drift" for w in shifted) / len(shifted)


def test_logging_overhead_is_measured_both_ways(report):
    o = report.logging_overhead
    assert o is not None and {r.logging for r in o.runs} == {False, True}
    assert (
        o.records_written > 0
        and o.off_rps > 0
        and o.on_rps > 0
    )
    pairs = []
    for i, (a, b) in enumerate(zip(o.runs[::2], o.runs[1::2], strict=True)):
        assert [a.logging, b.logging] == ([False, True] if i % 2 == 0 else [True, False])  # who goes first alternates
        off, on = (b, a) if a.logging else (a, b)
        pairs.append(on.throughput_rps / off.throughput_rps)
    assert len(pairs) == 2
    assert o.pair_ratios == pytest.approx(pairs, abs=1e-4) and o.ratio == pytest.approx(np.median(pairs), abs=1e-4)
    assert report.embedding_cost is not None and report.embedding_cost.mmd_ms_per_1000 > 0


def test_a_missing_serve_report_is_named(tmp_path, project):
    root = tmp_path / "proj"
    shutil.copytree(project / "data", root / "data")
    shutil.copytree(project / LAYOUT.serving_dir, root / LAYOUT.serving_dir)
    with pytest.raises(ReportError, match="reports/serve.json"):
        run_monitor(Params(monitor=SMALL), root)


def test_a_reference_of_another_model_version_is_refused_naming_both(project, report):
    ref = Reference.load(project / LAYOUT.monitor_reference_dir)
    from kit.monitor.predlog_read import read_prediction_log
    from kit.monitor.window import judge_window

    log = read_prediction_log(project / LAYOUT.monitor_log_dir).frame.head(30)
    other = Reference(profile=ref.profile.model_copy(update={"model_version": "v-old"}), sample=ref.sample,
                      embeddings=ref.embeddings)  # fmt: skip
    with pytest.raises(MonitorError, match="v-old.*test-0.1|test-0.1.*v-old"):
        judge_window(other, log, min_rows=10)


def test_params_yaml_monitor_section_validates():
    params = load_params(REPO / "params.yaml")
    assert params.monitor.false_alarm_target == 0.01 and params.monitor.control_windows >= 50
