"""The replayed scenarios judged from what the server logged: the log split back into each scenario's windows by
request id, every window judged against the reference, and per scenario detection, delay and false alarms."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from kit.core.io import rel_path
from kit.monitor.drift import write_drift_report
from kit.monitor.exporter import WindowSignals
from kit.monitor.features import MonitorError
from kit.monitor.profile import Reference
from kit.monitor.report import ScenarioResult, WindowResult
from kit.monitor.scenarios import Scenario
from kit.monitor.verdict import DRIFT
from kit.monitor.window import judge_window, log_window

__all__ = ["split_windows", "window_result", "judge_scenario", "control_false_alarm_rate"]

# The replay's request ids: "<scenario>-<window:03d>-<text:04d>" (kit.monitor.scenarios builds them).
_REQUEST_ID = re.compile(r"^(?P<scenario>[a-z_]+)-(?P<window>\d{3})-\d{4}$")


def split_windows(log: pd.DataFrame) -> dict[tuple[str, int], pd.DataFrame]:
    """The log's records grouped by (scenario, window) from their request ids; other records (the server's start
    probe, anything not replayed) are left out."""
    parts = log["request_id"].astype(str).str.extract(_REQUEST_ID)
    keep = parts["scenario"].notna()
    frame = log[keep].assign(_scenario=parts.loc[keep, "scenario"], _window=parts.loc[keep, "window"].astype(int))
    return {
        (str(name), int(k)): group.drop(columns=["_scenario", "_window"]).reset_index(drop=True)
        for (name, k), group in frame.groupby(["_scenario", "_window"], sort=True)
    }


def window_result(index: int, shifted_share: float, signals: WindowSignals) -> WindowResult:
    """One judged window as the report keeps it."""
    v = signals.verdict
    return WindowResult(
        index=index, shifted_share=shifted_share, status=v.status, rows=v.rows, level=v.level,
        scores={n: f.score for n, f in v.features.items()},
        thresholds={n: f.threshold for n, f in v.features.items()},
        p_values={n: f.p_value for n, f in v.features.items()},
        drifted=v.drifted_features, class_shares=signals.class_shares,
        macro_f1=signals.macro_f1, labelled_rows=signals.labelled_rows,
    )  # fmt: skip


def _evidently(
    reference: Reference, scenario: Scenario, windows: dict[int, pd.DataFrame], shown: int, html_dir: Path, root: Path
) -> str:
    features, _, _ = log_window(windows[shown], reference, what=f"{scenario.name} window {shown}")
    cal = reference.profile.calibration
    thresholds = {n: f.threshold for n, f in cal.features.items()}
    path = write_drift_report(
        reference.sample, features, html_dir / f"{scenario.name}.html",
        features=reference.profile.features, thresholds=thresholds,
    )  # fmt: skip
    return rel_path(path, root)


def judge_scenario(
    reference: Reference,
    scenario: Scenario,
    windows: dict[int, pd.DataFrame],
    *,
    min_rows: int,
    html_dir: Path,
    root: Path,
) -> ScenarioResult:
    """Judge each of a scenario's windows (from the log) and sum them up; write its Evidently HTML report for the
    first window judged drift (none: the last window), with the calibrated thresholds.

    Args:
        reference: the reference profile.
        scenario: the scenario as replayed (its windows' shifted shares and shift start).
        windows: window index -> its log records, with `true_label` where a delayed label arrived.
        min_rows: fewer records in a window: "not enough data".
        html_dir: where the Evidently report goes.
        root: project root (the report names the HTML relative to it).

    Raises:
        MonitorError: a replayed window is missing from the log.
    """
    results = []
    for w in scenario.windows:
        if w.index not in windows:
            raise MonitorError(f"prediction log has no record of {scenario.name} window {w.index}: was it replayed?")
        frame = windows[w.index]
        labels = frame["true_label"] if "true_label" in frame.columns else None
        signals = judge_window(
            reference, frame, min_rows=min_rows, true_labels=labels, what=f"{scenario.name} window {w.index}"
        )
        results.append(window_result(w.index, w.shifted_share, signals))
    start = scenario.shift_starts_at
    shifted = [r for r in results if r.shifted_share > 0]
    unshifted = [r for r in results if r.shifted_share == 0]
    flagged = [r.index for r in shifted if r.status == DRIFT]
    first = next((r.index for r in results if r.status == DRIFT and r.shifted_share > 0), None)
    shown = first if first is not None else results[-1].index
    meta = {k: v for k, v in scenario.metadata.items() if k != "description" and isinstance(v, str | int | float)}
    return ScenarioResult(
        name=scenario.name,
        description=str(scenario.metadata.get("description", "")),
        shift_starts_at=start,
        source=meta,
        windows=results,
        detected=None if start is None else first is not None,
        detection_delay=None if start is None or first is None else first - start,
        detection_rate=None if not shifted else len(flagged) / len(shifted),
        false_alarms=sum(r.status == DRIFT for r in unshifted),
        unshifted_windows=len(unshifted),
        evidently_html=_evidently(reference, scenario, windows, shown, html_dir, root),
    )


def control_false_alarm_rate(control: ScenarioResult) -> float:
    """Share of the control's judged windows (not "not enough data") that were called drift."""
    judged = [w for w in control.windows if w.status != "not enough data"]
    return sum(w.status == DRIFT for w in judged) / len(judged) if judged else 0.0
