"""The monitor stage's plots, drawn from a synthetic MonitorReport: the three PNGs are written at their layout paths,
are real images of a plausible size, and a report whose shift was never caught still plots (a "missed" bar)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kit.core.layout import LAYOUT
from kit.monitor.plots import lower_is_drift, plot_class_shares, plot_detection_delay, plot_statistics, write_plots
from kit.monitor.report import (
    EmbeddingCost,
    LoggingOverhead,
    LogSummary,
    MonitorReport,
    OverheadRun,
    ReferenceSummary,
    ScenarioResult,
    WindowResult,
)

FEATURES = ("length_chars", "length_tokens", "unk_rate", "subword_rate", "confidence", "label")
THRESHOLD = 1e-3  # p-value boundary of every tabular feature
MMD_THRESHOLD = 0.02


def _window(index: int, shifted: float, *, drift: bool, enough: bool = True, f1: float | None = 0.8) -> WindowResult:
    if not enough:
        return WindowResult(index=index, shifted_share=shifted, status="not enough data", rows=10, level=0.01,
                            scores={}, thresholds={}, p_values={}, drifted=[], class_shares={})  # fmt: skip
    scores = {f: 0.3 for f in FEATURES} | {"embedding_mmd2": 0.005}
    if drift:
        scores |= {"length_chars": 0.0, "length_tokens": 1e-6, "embedding_mmd2": 0.08}
    drifted = [f for f, v in scores.items() if (v > MMD_THRESHOLD if f == "embedding_mmd2" else v < THRESHOLD)]
    return WindowResult(
        index=index, shifted_share=shifted, status="drift" if drift else "no drift", rows=200, level=0.01 / 7,
        scores=scores, thresholds={f: THRESHOLD for f in FEATURES} | {"embedding_mmd2": MMD_THRESHOLD},
        p_values={f: 0.5 for f in scores}, drifted=drifted,
        class_shares={"business": 0.25 + 0.2 * shifted, "sports": 0.25, "sci_tech": 0.25, "world": 0.25 - 0.2 * shifted},
        macro_f1=f1, labelled_rows=60 if f1 is not None else 0,
    )  # fmt: skip


def _shift(name: str, *, starts: int, windows: int, detect_at: int | None) -> ScenarioResult:
    ws = [
        _window(i, 1.0 if i >= starts else 0.0, drift=detect_at is not None and i >= detect_at,
                f1=None if i == 1 else 0.8 - 0.1 * (i >= starts))
        for i in range(windows)
    ]  # fmt: skip
    shifted = windows - starts
    hits = sum(w.status == "drift" for w in ws[starts:])
    return ScenarioResult(
        name=name, description=f"{name} shift", shift_starts_at=starts, source={"kind": name}, windows=ws,
        detected=detect_at is not None, detection_delay=None if detect_at is None else detect_at - starts,
        detection_rate=hits / shifted, false_alarms=0, unshifted_windows=starts,
        evidently_html=f"reports/monitor/{name}.html",
    )  # fmt: skip


def make_report(*, detect: bool = True) -> MonitorReport:
    """A control (one false alarm, one thin window) and two shift scenarios; `length` is caught two windows after
    its shift starts, `typos` never (and with `detect=False` neither is)."""
    control_ws = [_window(i, 0.0, drift=i == 4, enough=i != 2) for i in range(8)]
    control = ScenarioResult(
        name="control", description="no shift", shift_starts_at=None, windows=control_ws, detected=None,
        detection_delay=None, detection_rate=None, false_alarms=1, unshifted_windows=8,
        evidently_html="reports/monitor/control.html",
    )  # fmt: skip
    length = _shift("length", starts=2, windows=6, detect_at=4 if detect else None)
    typos = _shift("typos", starts=2, windows=6, detect_at=None)
    scenarios = [control, length, typos]
    return MonitorReport(
        model_version="abc123", model_variant="student_int8",
        reference=ReferenceSummary(
            path="models/monitor/reference", split="validation", rows=1000, anchor_rows=500, embedding_dim=384,
            method="bh", target=0.01, window_size=200, null_windows=200, null_false_alarm_rate=0.01,
            thresholds={f: THRESHOLD for f in FEATURES} | {"embedding_mmd2": MMD_THRESHOLD}, seconds=3.2,
        ),
        log=LogSummary(path="data/monitor/predictions", files=3, records=4000, corrupt_lines=2,
                       labels_path="data/monitor/labels.jsonl", labels=1200, labels_matched=1190),
        scenarios=scenarios, control_false_alarm_rate=1 / 7, control_windows=7,
        detection={s.name: s.detection_delay for s in scenarios[1:]},
        logging_overhead=LoggingOverhead(
            concurrency=16, duration_s=8.0, off_rps=400.0, on_rps=390.0, ratio=0.975, records_written=6000,
            records_dropped=0,
            runs=[OverheadRun(logging=on, throughput_rps=390.0 if on else 400.0, p99_ms=40.0, errors=0)
                  for on in (False, True)],
        ),
        embedding_cost=EmbeddingCost(dim=384, mmd_ms_per_1000=12.0, reference_rows=500),
    )  # fmt: skip


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_write_plots_writes_the_three_layout_pngs(tmp_path):
    report = make_report()
    plots = write_plots(report, tmp_path)
    assert plots == [LAYOUT.monitor_statistics_plot, LAYOUT.monitor_class_shares_plot, LAYOUT.monitor_delay_plot]
    for rel in plots:
        path = tmp_path / rel
        width, height = _png_size(path)
        assert 400 <= width <= 4000 and 300 <= height <= 4000, (rel, width, height)
        assert path.stat().st_size > 10_000
        assert not list(path.parent.glob(".*"))  # written atomically: no temp file left beside it


@pytest.mark.parametrize("plot", [plot_statistics, plot_class_shares, plot_detection_delay])
def test_an_undetected_shift_still_plots(tmp_path, plot):
    # No shift caught at all (both bars "missed"), a window with not enough data, windows without labels.
    out = plot(make_report(detect=False), tmp_path / "sub" / "plot.png")
    assert out == tmp_path / "sub" / "plot.png"
    _png_size(out)


def test_the_statistics_plot_is_one_panel_per_feature(tmp_path):
    import matplotlib.pyplot as plt

    seen = []
    original = plt.subplots

    def spy(*args, **kwargs):
        fig, axes = original(*args, **kwargs)
        seen.append(fig)
        return fig, axes

    plt.subplots = spy
    try:
        plot_statistics(make_report(), tmp_path / "s.png")
    finally:
        plt.subplots = original
    (fig,) = seen
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [*FEATURES, "embedding_mmd2"]
    scales = {ax.get_title(): ax.get_yscale() for ax in fig.axes if ax.get_visible()}
    assert scales["embedding_mmd2"] == "linear" and scales["length_chars"] == "log"


def test_lower_is_drift_from_the_feature_methods():
    assert all(lower_is_drift(f) for f in FEATURES)
    assert lower_is_drift("some_new_pvalue_feature")
    assert not lower_is_drift("embedding_mmd2")


def test_a_report_with_no_shift_scenario_and_no_scores_still_plots(tmp_path):
    report = make_report()
    control = report.scenarios[0].model_copy(update={"windows": [_window(0, 0.0, drift=False, enough=False)]})
    report = report.model_copy(update={"scenarios": [control], "detection": {}})
    for plot in (plot_statistics, plot_class_shares, plot_detection_delay):
        _png_size(plot(report, tmp_path / f"{plot.__name__}.png"))


def test_infinite_thresholds_are_left_out(tmp_path):
    # Too few null windows for the level: the calibration's boundary is +-inf, which no axis can draw.
    report = make_report()
    inf = {"length_chars": float("-inf"), "embedding_mmd2": float("inf")}
    ref = report.reference.model_copy(update={"thresholds": report.reference.thresholds | inf})
    shift = report.scenarios[1]
    windows = [w.model_copy(update={"thresholds": w.thresholds | inf}) for w in shift.windows]
    report = report.model_copy(update={"reference": ref, "scenarios": [report.scenarios[0], shift.model_copy(
        update={"windows": windows})]})  # fmt: skip
    _png_size(plot_statistics(report, tmp_path / "s.png"))
