"""Prometheus alert rules for the served model, built from typed settings: latency, errors, availability, queue,
drift, class shares and quality, rendered as a plain rules file and as a prometheus-operator PrometheusRule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from kit.core.errors import KitError
from kit.core.io import write_text
from kit.monitor import metric_names as m

__all__ = [
    "ALERT_NAMES",
    "AlertConfigError",
    "AlertSettings",
    "AlertRule",
    "alert_rules",
    "rule_groups",
    "render_rules",
    "render_prometheus_rule",
    "write_rules",
    "duration_seconds",
    "VALUE_TEMPLATE",
]

Severity = Literal["critical", "warning", "info"]
# Prometheus' duration syntax (model.ParseDuration): units from largest to smallest, e.g. 90s, 1h30m.
_DURATION = r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$"
Duration = Annotated[str, StringConstraints(pattern=_DURATION, min_length=2)]
_UNIT_S = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}

ALERT_NAMES = (
    "KitServeLatencyP99High",
    "KitServeErrorRatioHigh",
    "KitServeDown",
    "KitServeNotReady",
    "KitServeQueueSaturated",
    "KitMonitorFeatureDrift",
    "KitMonitorClassShareShift",
    "KitMonitorQualityDrop",
    "KitMonitorStale",
)
# Short for the signals that mean users are failing now; long for the statistical ones, which move per window. The
# stale alert's 15m covers a Pushgateway restart without persistence: its groups are gone until the next run pushes.
DEFAULT_FOR = dict(zip(ALERT_NAMES, ("10m", "5m", "2m", "5m", "10m", "15m", "30m", "30m", "15m"), strict=True))
DEFAULT_SEVERITY: dict[str, Severity] = dict(
    zip(ALERT_NAMES, ("warning", "critical", "critical", "critical", "warning", "warning", "warning", "critical",
                      "warning"), strict=True)
)  # fmt: skip


class AlertConfigError(KitError):
    """The alert settings cannot produce valid rules or rule tests (names the setting and the problem)."""


def duration_seconds(duration: str) -> float:
    """Seconds in a Prometheus duration string ("90s", "1h30m")."""
    parts = re.findall(r"(\d+)(ms|y|w|d|h|m|s)", duration)
    if not re.fullmatch(_DURATION, duration) or not parts:
        raise AlertConfigError(f"{duration!r} is not a Prometheus duration (e.g. 30s, 5m, 1h30m)")
    return sum(int(n) * _UNIT_S[unit] for n, unit in parts)


class AlertSettings(BaseModel):
    """What the alerts fire on. `for_durations` and `severities` override the defaults per alert name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p99_target_ms: float = Field(100.0, gt=0, description="p99 latency target of /predict (params monitor/deploy).")
    error_ratio: float = Field(0.01, gt=0, lt=1, description="Largest tolerated share of 5xx responses.")
    queue_saturation: float = Field(128, gt=0, description="Texts waiting (mean over the rate window) = saturated.")
    class_share_shift: float = Field(0.15, gt=0, lt=1, description="Largest tolerated |share - reference share|.")
    quality_floor: float = Field(0.5, gt=0, lt=1, description="Lowest tolerated realized macro-F1 (finetune gate).")
    min_labelled_rows: int = Field(50, ge=1, description="Labels a window needs before its macro-F1 may alert.")
    rate_window: Duration = "5m"
    max_verdict_age: Duration = Field(
        "1h", description="Oldest tolerated monitor verdict (last push); the CronJob pushes every 15m."
    )
    for_durations: dict[str, Duration] = Field(default_factory=dict)
    severities: dict[str, Severity] = Field(default_factory=dict)
    runbook_base_url: str = Field(
        "https://example.github.io/kit/runbooks/",
        pattern=r"^https?://[^#\s]+$",
        description="The published runbooks page, without a fragment (each alert adds its section's anchor).",
    )
    serve_job: str = m.SERVE_JOB
    monitor_job: str = m.MONITOR_JOB

    @field_validator("for_durations", "severities")
    @classmethod
    def _known_alerts(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(ALERT_NAMES))
        if unknown:
            raise ValueError(f"unknown alert name(s) {unknown}; known: {list(ALERT_NAMES)}")
        return value

    def for_(self, alert: str) -> str:
        """The `for:` duration of `alert`."""
        return self.for_durations.get(alert, DEFAULT_FOR[alert])

    def severity(self, alert: str) -> Severity:
        """The severity label of `alert`."""
        return self.severities.get(alert, DEFAULT_SEVERITY[alert])


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule; `component` says which group (serve or monitor) it belongs to."""

    alert: str
    expr: str
    for_: str
    severity: Severity
    component: Literal["serve", "monitor"]
    summary: str
    description: str
    runbook_url: str

    def to_dict(self) -> dict:
        """The rule as Prometheus' rule-file schema wants it."""
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, "component": self.component},
            "annotations": {"summary": self.summary, "description": self.description, "runbook_url": self.runbook_url},
        }


VALUE_TEMPLATE = '{{ $value | printf "%.4g" }}'  # the only $value form rule_tests knows how to expand


def _exprs(s: AlertSettings) -> dict[str, str]:
    sj, mj, w = f'job="{s.serve_job}"', f'job="{s.monitor_job}"', s.rate_window
    lat = f'{m.REQUEST_DURATION.sample("bucket")}{{{sj},route="{m.PREDICT_ROUTE}"}}'
    req = m.REQUESTS.name
    return {
        "KitServeLatencyP99High": f"histogram_quantile(0.99, sum by (job, le) (rate({lat}[{w}]))) > {s.p99_target_ms / 1000:g}",
        "KitServeErrorRatioHigh": f'sum by (job) (rate({req}{{{sj},status=~"5.."}}[{w}])) / sum by (job) '
        f"(rate({req}{{{sj}}}[{w}])) > {s.error_ratio:g}",
        "KitServeDown": f"up{{{sj}}} == 0",
        "KitServeNotReady": f"{m.READY.name}{{{sj}}} == 0",
        "KitServeQueueSaturated": f"avg_over_time({m.QUEUE_DEPTH.name}{{{sj}}}[{w}]) > {s.queue_saturation:g}",
        # The monitor's own decision (calibrated thresholds, multiple-testing control); the value shown is the p-value.
        "KitMonitorFeatureDrift": f"{m.DRIFT_P_VALUE.name}{{{mj}}} and {m.DRIFT_FEATURE_DETECTED.name}{{{mj}}} == 1",
        "KitMonitorClassShareShift": f"abs({m.CLASS_SHARE.name}{{{mj}}} - {m.REFERENCE_CLASS_SHARE.name}{{{mj}}})"
        f" > {s.class_share_shift:g}",
        # Too few delayed labels make macro-F1 noise: such a window is "not enough data", never an alert.
        "KitMonitorQualityDrop": f"{m.MACRO_F1.name}{{{mj}}} < {s.quality_floor:g} and "
        f"{m.LABELLED_ROWS.name}{{{mj}}} >= {s.min_labelled_rows}",
        # The gateway's own per-group push time: a monitor that stopped pushing (failing runs, a suspended CronJob)
        # leaves its last verdict up forever, so its age is watched; absent() covers a monitor that never pushed.
        "KitMonitorStale": f"time() - {m.PUSH_TIME}{{{mj}}} > {duration_seconds(s.max_verdict_age):g} "
        f"or absent({m.PUSH_TIME}{{{mj}}})",
    }


def _texts(s: AlertSettings) -> dict[str, tuple[str, str]]:
    w, job = s.rate_window, "{{ $labels.job }}"
    return {
        "KitServeLatencyP99High": (
            f"p99 latency of {job} above {s.p99_target_ms:g} ms",
            f"p99 latency of {m.PREDICT_ROUTE} on {job} is {VALUE_TEMPLATE} s over {w} (target {s.p99_target_ms / 1000:g} s).",
        ),
        "KitServeErrorRatioHigh": (
            f"{job} answers more than {s.error_ratio:.2%} of requests with 5xx",
            f"{VALUE_TEMPLATE} of the requests to {job} got a 5xx status over {w} (tolerated {s.error_ratio:g}).",
        ),
        "KitServeDown": (
            f"{job} target {{{{ $labels.instance }}}} is down",
            f"Prometheus cannot scrape {job} at {{{{ $labels.instance }}}}: the process is gone or unreachable.",
        ),
        "KitServeNotReady": (
            f"{job} at {{{{ $labels.instance }}}} is not ready",
            f"{job} at {{{{ $labels.instance }}}} reports kit_serve_ready 0: model not loaded, failed or draining.",
        ),
        "KitServeQueueSaturated": (
            f"{job} micro-batch queue saturated",
            f"{VALUE_TEMPLATE} texts wait for a micro-batch on {{{{ $labels.instance }}}} on average over {w} "
            f"(saturation {s.queue_saturation:g}).",
        ),
        "KitMonitorFeatureDrift": (
            "Production inputs drift on feature {{ $labels.feature }}",
            f"The monitor flags {{{{ $labels.feature }}}} as drifted in its latest window (calibrated p-value {VALUE_TEMPLATE}, "
            "after multiple-testing control across features).",
        ),
        "KitMonitorClassShareShift": (
            "Share of predicted class {{ $labels.label }} moved from the reference",
            f"Predicted share of {{{{ $labels.label }}}} differs from the reference by {VALUE_TEMPLATE} "
            f"(tolerated {s.class_share_shift:g}).",
        ),
        "KitMonitorQualityDrop": (
            f"Realized macro-F1 below {s.quality_floor:g}",
            f"Macro-F1 on the latest window's delayed labels is {VALUE_TEMPLATE} (floor {s.quality_floor:g}, "
            f"at least {s.min_labelled_rows} labels).",
        ),
        "KitMonitorStale": (
            f"No verdict from the drift monitor for over {s.max_verdict_age}",
            f"The latest verdict {job} {{{{ $labels.instance }}}} pushed is {VALUE_TEMPLATE} s old (tolerated "
            f"{s.max_verdict_age}); 1 without an instance means the Pushgateway holds no verdict of {job} at all.",
        ),
    }


def alert_rules(settings: AlertSettings | None = None) -> list[AlertRule]:
    """Every alert of ALERT_NAMES, in that order.

    Args:
        settings: thresholds, durations, severities and the runbook URL (defaults when None).

    Returns:
        The rules; each runbook_url is the runbooks page plus `#<alert name, lower case>` (MkDocs' heading anchor).
    """
    s = settings or AlertSettings()
    exprs, texts = _exprs(s), _texts(s)
    base = s.runbook_base_url
    return [
        AlertRule(
            alert=name,
            expr=exprs[name],
            for_=s.for_(name),
            severity=s.severity(name),
            component="serve" if name.startswith("KitServe") else "monitor",
            summary=texts[name][0],
            description=texts[name][1],
            runbook_url=f"{base}#{name.lower()}",
        )
        for name in ALERT_NAMES
    ]


def rule_groups(settings: AlertSettings | None = None) -> list[dict]:
    """The rules in two groups, `kit-serve` and `kit-monitor` (the `groups:` list of a rules file)."""
    rules = alert_rules(settings)
    return [
        {"name": f"kit-{part}", "rules": [r.to_dict() for r in rules if r.component == part]}
        for part in ("serve", "monitor")
    ]


def render_rules(settings: AlertSettings | None = None) -> str:
    """A Prometheus rules file (YAML) holding every alert."""
    return yaml.safe_dump({"groups": rule_groups(settings)}, sort_keys=False, width=1000)


def render_prometheus_rule(
    settings: AlertSettings | None = None,
    *,
    name: str = "kit-alerts",
    namespace: str = "kit",
    labels: dict | None = None,
) -> str:
    """The same groups as a prometheus-operator PrometheusRule (monitoring.coreos.com/v1).

    Args:
        settings: as for alert_rules.
        name, namespace: the resource's metadata.
        labels: metadata labels; the operator's `ruleSelector` must match them (default: the kit's app labels).
    """
    meta_labels = (
        labels if labels is not None else {"app.kubernetes.io/name": "kit-serve", "app.kubernetes.io/part-of": "kit"}
    )
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "spec": {"groups": rule_groups(settings)},
    }
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def write_rules(
    out_dir: str | Path, settings: AlertSettings | None = None, *, namespace: str = "kit"
) -> dict[str, Path]:
    """Write `kit-alerts.rules.yml` and `prometheusrule.yaml` atomically into `out_dir`.

    Returns:
        {"rules": path, "prometheus_rule": path}.
    """
    out = Path(out_dir)
    return {
        "rules": write_text(out / "kit-alerts.rules.yml", render_rules(settings)),
        "prometheus_rule": write_text(
            out / "prometheusrule.yaml", render_prometheus_rule(settings, namespace=namespace)
        ),
    }
