"""The monitor stage: per-feature drift through Evidently with thresholds calibrated on reference-vs-reference
windows, embedding drift (MMD), scenarios replayed through `kit serve`, alert rules, and the Grafana dashboard.

The public names below load their module on first use, so importing the package stays cheap: no Evidently,
pandas or numpy until a function is called."""

from __future__ import annotations

from kit.core.lazy import lazy_api

# name -> module that defines it
_API = {
    "run_monitor": "kit.monitor.stage",
    "MonitorReport": "kit.monitor.report",
    "ScenarioResult": "kit.monitor.report",
    "WindowResult": "kit.monitor.report",
    "MonitorError": "kit.monitor.features",
    "FeatureSpec": "kit.monitor.features",
    "DEFAULT_FEATURES": "kit.monitor.features",
    "column_score": "kit.monitor.drift",
    "feature_scores": "kit.monitor.drift",
    "drift_report": "kit.monitor.drift",
    "report_scores": "kit.monitor.drift",
    "write_drift_report": "kit.monitor.drift",
    "MMDReference": "kit.monitor.embedding",
    "mmd2": "kit.monitor.embedding",
    "mmd_cost_per_1000": "kit.monitor.embedding",
    "CalibrationSettings": "kit.monitor.calibrate",
    "Calibration": "kit.monitor.calibrate",
    "calibrate": "kit.monitor.calibrate",
    "score_window": "kit.monitor.calibrate",
    "ReferenceProfile": "kit.monitor.profile",
    "Reference": "kit.monitor.profile",
    "build_reference": "kit.monitor.profile",
    "WindowVerdict": "kit.monitor.verdict",
    "window_verdict": "kit.monitor.verdict",
    "AlertSettings": "kit.monitor.alerts",
    "alert_rules": "kit.monitor.alerts",
    "render_rules": "kit.monitor.alerts",
    "render_prometheus_rule": "kit.monitor.alerts",
    "write_rules": "kit.monitor.alerts",
    "render_rule_tests": "kit.monitor.rule_tests",
    "write_rule_tests": "kit.monitor.rule_tests",
    "DashboardSettings": "kit.monitor.dashboard",
    "build_dashboard": "kit.monitor.dashboard",
    "write_dashboard": "kit.monitor.dashboard",
    "monitor_gauges": "kit.monitor.metric_names",
    "PushSettings": "kit.monitor.exporter",
    "WindowSignals": "kit.monitor.exporter",
    "window_signals": "kit.monitor.exporter",
    "verdict_registry": "kit.monitor.exporter",
    "DriftPublisher": "kit.monitor.exporter",
    "TextFeatures": "kit.serve.textfeatures",
    "load_feature_tokenizer": "kit.serve.textfeatures",
    "text_features": "kit.serve.textfeatures",
    "features_frame": "kit.monitor.textfeatures",
    "text_hash": "kit.serve.textfeatures",
    "PredictionRecord": "kit.serve.predlog",
    "LogSettings": "kit.serve.predlog",
    "PredictionLogWriter": "kit.serve.predlog",
    "make_record": "kit.serve.predlog",
    "LogRead": "kit.monitor.predlog_read",
    "LabelJoin": "kit.monitor.predlog_read",
    "read_prediction_log": "kit.monitor.predlog_read",
    "read_delayed_labels": "kit.monitor.predlog_read",
    "join_delayed_labels": "kit.monitor.predlog_read",
    "log_window": "kit.monitor.window",
    "judge_window": "kit.monitor.window",
    "latest_window": "kit.monitor.window",
    "empty_window_signals": "kit.monitor.window",
    "ScenarioSettings": "kit.monitor.scenarios",
    "Scenario": "kit.monitor.scenarios",
    "Window": "kit.monitor.scenarios",
    "load_pool": "kit.monitor.scenarios",
    "build_scenario": "kit.monitor.scenarios",
    "build_scenarios": "kit.monitor.scenarios",
}

__all__ = list(_API)

__getattr__, __dir__ = lazy_api(__name__, _API)
