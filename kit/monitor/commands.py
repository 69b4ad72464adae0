"""The `kit monitor` commands: judge the latest window of a prediction log (summary, JSON, Pushgateway push) and
write the alert rules and the Grafana dashboard. Mounted by kit.cli; heavy modules load inside each command.

Exit codes of `kit monitor check`: 0 for "no drift" and "not enough data"; 1 for unusable input (a KitError, printed
by the boundary in kit.core.boundary); DRIFT_EXIT (3) for "drift", only with --fail-on-drift (a CI gate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    import pandas as pd

    from kit.monitor.exporter import WindowSignals
    from kit.monitor.predlog_read import LabelJoin, LogRead

__all__ = ["monitor_app", "DRIFT_EXIT"]

DRIFT_EXIT = 3

monitor_app = typer.Typer(
    no_args_is_help=True, help="Drift monitoring: judge a prediction log, render rules/dashboard."
)


def _window(log: pd.DataFrame, rows: int | None, since: str | None) -> tuple[pd.DataFrame, str]:
    """The window to judge and how to name it: the newest rows, the last `since`, or the whole log."""
    from kit.core.errors import KitError
    from kit.monitor.alerts import duration_seconds
    from kit.monitor.features import MonitorError
    from kit.monitor.window import latest_window

    if rows is not None and since is not None:
        raise MonitorError("give --rows or --since, not both")
    if rows is not None:
        return latest_window(log, rows=rows), f"newest {rows} records"
    if since is not None:
        try:
            seconds = duration_seconds(since)
        except KitError as exc:  # AlertConfigError: reworded for this option
            raise MonitorError(f"--since {since!r}: not a duration (e.g. 15m, 1h, 90s)") from exc
        return latest_window(log, since_s=seconds), f"last {since}"
    return log, "whole log"


def _summary(read: LogRead, what: str, signals: WindowSignals, join: LabelJoin | None) -> list[str]:
    """One screen: the read, the window, the status and one line per feature."""
    v = signals.verdict
    lines = [f"log: {len(read.files)} file(s), {len(read.frame)} record(s), {read.corrupt} corrupt line(s) skipped"]
    lines += [f"  corrupt: {ex}" for ex in read.corrupt_examples]
    if read.open_files:
        lines.append(f"  {read.open_files} file(s) still open by a writer, not read")
    lines.append(f"window: {what}: {v.rows} record(s), model {v.model_version}, min rows {v.min_rows}")
    if join is not None:
        lines.append(
            f"labels: {join.labels} read, {join.matched} matched, {join.unmatched} without a record, "
            f"{join.corrupt} unusable; {signals.labelled_rows} in the window"
        )
    lines.append(f"status: {v.status} (per-feature level {v.level:.4g}, {v.method})")
    if v.features:
        width = max(len(n) for n in v.features)
        lines.append(f"  {'feature':<{width}}  {'score':>10}  {'threshold':>10}  {'p-value':>8}  drifted")
        for name, f in v.features.items():
            side = "<=" if f.lower_is_drift else ">="  # the side of the threshold that is drift
            lines.append(
                f"  {name:<{width}}  {f.score:>10.4g}  {side}{f.threshold:>8.4g}  {f.p_value:>8.4g}  "
                f"{'YES' if f.drifted else 'no'}"
            )
    if signals.macro_f1 is not None:
        lines.append(f"macro-F1: {signals.macro_f1:.4f} on {signals.labelled_rows} delayed label(s)")
    return lines


@monitor_app.command("check")
def check_cmd(
    log_dir: Annotated[Path, typer.Argument(help="prediction log directory (or one JSONL file)")],
    reference: Annotated[Path, typer.Option("--reference", help="reference profile directory")],
    labels: Annotated[Optional[Path], typer.Option("--labels", help="delayed labels (CSV or JSONL)")] = None,
    rows: Annotated[Optional[int], typer.Option("--rows", min=1, help="judge the newest N records")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="judge the records of the last 15m, 1h, ...")] = None,
    min_rows: Annotated[int, typer.Option("--min-rows", min=2, help="fewer rows: not enough data")] = 50,
    push_url: Annotated[Optional[str], typer.Option("--push-url", help="Pushgateway base URL")] = None,
    job: Annotated[str, typer.Option("--job", help="pushed job label (the rules select it)")] = "kit-monitor",
    instance: Annotated[
        Optional[str], typer.Option("--instance", help="pushed instance (default: kit-monitor)")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write the window's signals as JSON")] = None,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help=f"exit {DRIFT_EXIT} on drift")] = False,
) -> None:
    """Judge the latest window of LOG_DIR against the reference; print a summary, write JSON, push the gauges."""
    from pydantic import ValidationError

    from kit.core.io import write_text
    from kit.monitor.exporter import DriftPublisher, PushSettings
    from kit.monitor.features import MonitorError
    from kit.monitor.predlog_read import join_delayed_labels, read_prediction_log
    from kit.monitor.profile import Reference
    from kit.monitor.verdict import DRIFT
    from kit.monitor.window import empty_window_signals, judge_window

    ref = Reference.load(reference)
    push = None
    if push_url is not None:  # settings checked before the log is read: a bad URL fails fast
        try:
            push = PushSettings(url=push_url, job=job, **({"instance": instance} if instance else {}))
        except ValidationError as exc:
            raise MonitorError(f"--push-url/--job/--instance: {exc.errors()[0]['msg']} ({push_url!r})") from exc
    read = read_prediction_log(log_dir)
    log, join = read.frame, None
    if labels is not None:  # joined on the whole log, so the window keeps its index and the labels stay aligned
        log, join = join_delayed_labels(log, labels)
    window, what = _window(log, rows, since)
    if window.empty:  # no traffic in the window is not a failure: push "not enough data" so the verdict stays fresh
        signals = empty_window_signals(ref, min_rows=min_rows)
    else:
        truth = window["true_label"] if join is not None else None
        signals = judge_window(ref, window, min_rows=min_rows, true_labels=truth, what=f"{log_dir} ({what})")
    for line in _summary(read, what, signals, join):
        typer.echo(line)
    if out is not None:
        write_text(out, signals.model_dump_json(indent=1) + "\n")
        typer.echo(f"wrote {out}")
    if push is not None:
        publisher = DriftPublisher(push)
        publisher.publish(signals)
        typer.echo(f"pushed to {push.url} (job={push.job}, instance={push.instance})")
    if fail_on_drift and signals.verdict.status == DRIFT:
        raise typer.Exit(DRIFT_EXIT)


@monitor_app.command("rules")
def rules_cmd(
    out_dir: Annotated[Path, typer.Argument(help="directory for the rules, PrometheusRule and promtool tests")],
    params_file: Annotated[Path, typer.Option("--params", help="params file (defaults if absent)")] = Path(
        "params.yaml"
    ),
    rule_tests: Annotated[bool, typer.Option("--rule-tests/--no-rule-tests", help="write the promtool test")] = True,
) -> None:
    """Write kit-alerts.rules.yml, prometheusrule.yaml (namespace deploy.namespace) and kit-alerts.test.yml."""
    from kit.monitor.alerts import AlertSettings, write_rules
    from kit.monitor.rule_tests import write_rule_tests

    settings, namespace = AlertSettings(), "kit"
    if params_file.is_file():
        from kit.core.params import load_params

        p = load_params(params_file)
        settings = AlertSettings(p99_target_ms=p.monitor.latency_p99_ms)
        namespace = p.deploy.namespace
    paths = list(write_rules(out_dir, settings, namespace=namespace).values())
    if rule_tests:
        paths.append(write_rule_tests(out_dir, settings))
    for path in paths:
        typer.echo(str(path))


@monitor_app.command("dashboard")
def dashboard_cmd(
    out_dir: Annotated[Path, typer.Argument(help="directory for the dashboard JSON and Grafana provisioning")],
) -> None:
    """Write the Grafana dashboard and its provisioning files under OUT_DIR."""
    from kit.monitor.dashboard import write_dashboard

    for path in write_dashboard(out_dir).values():
        typer.echo(str(path))
