"""Publishes each window's verdict to a Prometheus Pushgateway as the metric-name contract's gauges: one group per
monitor, replaced whole on every window, so Prometheus and the alert rules see exactly the latest window.

Why a Pushgateway push and not an exporter process: the monitor is a batch job. It judges one window of the
prediction log and exits (a DVC stage run; in Kubernetes a CronJob). Gauges served by the job itself would vanish
with it: `up{job="kit-monitor"}` would read 0 between runs, the drift series would go stale at the first failed
scrape, and an alert with a `for:` longer than the run (the drift alert's default is 15m) could never fire. The
verdict is the outcome of a service-level batch job, not a property of one machine: the one case Prometheus' docs
give for the Pushgateway. A push (HTTP PUT) also replaces the monitor's whole group at once: a feature that is not
scored in this window, or a window with not enough data, leaves no value from an older window behind. The costs,
and how they are met: the scrape job must set `honor_labels: true` (so the pushed `job` and `instance` are kept; the
rules select `job="kit-monitor"`); pushed series never expire, so a retired monitor calls `withdraw()`; the
gateway's own `push_time_seconds` tells how old the latest verdict is."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, delete_from_gateway, push_to_gateway
from pydantic import BaseModel, ConfigDict, Field

from kit.core.metrics import accuracy_macro_f1
from kit.monitor import metric_names as m
from kit.monitor.features import MonitorError
from kit.monitor.verdict import NOT_ENOUGH_DATA, WindowVerdict

if TYPE_CHECKING:
    import pandas as pd

    from kit.monitor.profile import Reference

__all__ = ["PushSettings", "WindowSignals", "window_signals", "verdict_registry", "DriftPublisher"]


class PushSettings(BaseModel):
    """Where and under which grouping key the monitor pushes.

    Args:
        url: the Pushgateway's base URL.
        job: the pushed `job` label; the alert rules and the dashboard select on it.
        instance: the grouping key's `instance`: one group per monitor deployment (two monitors never overwrite each
            other's verdicts).
        timeout_s: seconds a push or delete may take.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field("http://127.0.0.1:9091", pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    job: str = Field(m.MONITOR_JOB, min_length=1)
    instance: str = Field("kit-monitor", min_length=1)
    timeout_s: float = Field(10.0, gt=0)


class WindowSignals(BaseModel):
    """Everything the monitor publishes about one window: the drift verdict and the class and quality signals
    beside it (predicted class shares against the reference's, realized macro-F1 on the delayed labels)."""

    verdict: WindowVerdict
    class_shares: dict[str, float]
    reference_shares: dict[str, float]
    macro_f1: float | None = None
    labelled_rows: int = Field(0, ge=0)


def window_signals(
    verdict: WindowVerdict,
    reference: Reference,
    window: pd.DataFrame,
    *,
    true_labels: pd.Series | None = None,
    label_column: str = "label",
) -> WindowSignals:
    """The signals of one judged window.

    Args:
        verdict: the window's verdict (window_verdict).
        reference: the reference it was judged against; its sketch of `label_column` gives the reference shares.
        window: the window's features, one row per prediction; `label_column` holds the predicted label.
        true_labels: delayed labels aligned with `window`'s index, missing (NaN/None) where none arrived yet.
        label_column: the predicted-label column.

    Returns:
        The signals; every label seen in the reference or the window gets a share (0 where absent).

    Raises:
        MonitorError: the window or the reference has no `label_column`, or `true_labels` is not aligned.
    """
    if label_column not in window.columns:
        raise MonitorError(f"window: no predicted-label column {label_column!r} (has {', '.join(window.columns)})")
    sketch = reference.profile.sketches.get(label_column)
    if sketch is None or not sketch.shares:
        raise MonitorError(f"reference profile has no class shares for {label_column!r}: build it with that feature")
    predicted = window[label_column].astype(str)
    observed = predicted.value_counts(normalize=True).to_dict()
    labels = sorted(set(sketch.shares) | set(observed))
    shares = {lab: float(observed.get(lab, 0.0)) for lab in labels}
    refs = {lab: float(sketch.shares.get(lab, 0.0)) for lab in labels}
    if true_labels is None:
        return WindowSignals(verdict=verdict, class_shares=shares, reference_shares=refs)
    if not true_labels.index.equals(window.index):
        raise MonitorError("true_labels must be aligned with the window's index (join delayed labels by request id)")
    known = true_labels.notna()
    if not known.any():
        return WindowSignals(verdict=verdict, class_shares=shares, reference_shares=refs)
    # The macro average over the classes seen in either side, as the finetune stage's validation metric.
    f1 = accuracy_macro_f1(true_labels[known].astype(str), predicted[known])["macro_f1"]
    return WindowSignals(
        verdict=verdict, class_shares=shares, reference_shares=refs, macro_f1=f1, labelled_rows=int(known.sum())
    )


def verdict_registry(signals: WindowSignals) -> CollectorRegistry:
    """A fresh registry holding the window's gauges, named by kit.monitor.metric_names.

    A window with not enough data carries only its row counts: no drift decision (it is never reported as drift
    nor as "no drift") and no class shares or macro-F1, which would be noise on so few rows."""
    registry = CollectorRegistry()
    v = signals.verdict
    enough = v.status != NOT_ENOUGH_DATA
    wanted = [m.WINDOW_ROWS, m.LABELLED_ROWS]
    if enough:
        wanted += [m.DRIFT_STATISTIC, m.DRIFT_THRESHOLD, m.DRIFT_P_VALUE, m.DRIFT_FEATURE_DETECTED, m.DRIFT_DETECTED]
        wanted += [m.CLASS_SHARE, m.REFERENCE_CLASS_SHARE] + ([m.MACRO_F1] if signals.macro_f1 is not None else [])
    g = m.monitor_gauges(registry, series=wanted)
    g[m.WINDOW_ROWS.name].set(v.rows)
    g[m.LABELLED_ROWS.name].set(signals.labelled_rows)
    if not enough:
        return registry
    for name, f in v.features.items():
        g[m.DRIFT_STATISTIC.name].labels(name).set(f.score)
        g[m.DRIFT_THRESHOLD.name].labels(name).set(f.threshold)
        g[m.DRIFT_P_VALUE.name].labels(name).set(f.p_value)
        g[m.DRIFT_FEATURE_DETECTED.name].labels(name).set(int(f.drifted))
    g[m.DRIFT_DETECTED.name].set(int(bool(v.drifted_features)))
    for label, share in signals.class_shares.items():
        g[m.CLASS_SHARE.name].labels(label).set(share)
    for label, share in signals.reference_shares.items():
        g[m.REFERENCE_CLASS_SHARE.name].labels(label).set(share)
    if signals.macro_f1 is not None:
        g[m.MACRO_F1.name].set(signals.macro_f1)
    return registry


class DriftPublisher:
    """Pushes window signals to the Pushgateway under one grouping key (`job`, `instance`)."""

    def __init__(self, settings: PushSettings | None = None):
        self.settings = settings or PushSettings()

    @property
    def grouping_key(self) -> dict[str, str]:
        """The group's labels beside `job`."""
        return {"instance": self.settings.instance}

    def publish(self, signals: WindowSignals) -> CollectorRegistry:
        """Replace the monitor's group with this window's gauges (HTTP PUT).

        Returns:
            The registry that was pushed.

        Raises:
            MonitorError: the gateway cannot be reached or refuses the push (names the URL and the reason).
        """
        registry = verdict_registry(signals)
        self._call(push_to_gateway, "push", registry=registry)
        return registry

    def withdraw(self) -> None:
        """Delete the monitor's group, e.g. when the monitor is retired: pushed series never expire by themselves."""
        self._call(delete_from_gateway, "delete")

    def _call(self, fn: Callable[..., None], action: str, **kw: object) -> None:
        s = self.settings
        try:
            fn(s.url, job=s.job, grouping_key=self.grouping_key, timeout=s.timeout_s, **kw)
        except urllib.error.HTTPError as exc:  # before URLError, which it subclasses: the gateway answered
            body = exc.read().decode("utf-8", "replace").strip()
            raise MonitorError(f"Pushgateway at {s.url} refused the {action} ({exc.code}): {body}") from exc
        except OSError as exc:  # URLError, refused connections, timeouts
            raise MonitorError(f"cannot reach the Pushgateway at {s.url} to {action}: {exc}") from exc
