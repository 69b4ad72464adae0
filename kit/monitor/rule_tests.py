"""`promtool test rules` unit tests for the alert rules, generated from the same settings: per alert, a bad input on
which it fires (only once its `for:` has passed, with the exact labels and annotations) and good inputs it ignores."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kit.core.io import write_text
from kit.monitor import metric_names as m
from kit.monitor.alerts import VALUE_TEMPLATE, AlertConfigError, AlertSettings, alert_rules, duration_seconds
from kit.serve.telemetry import LATENCY_BUCKETS_S

__all__ = ["Case", "rule_cases", "render_rule_tests", "write_rule_tests", "expand"]

SERVE_INSTANCE, MONITOR_INSTANCE = "127.0.0.1:8000", "127.0.0.1:9108"


@dataclass(frozen=True)
class Case:
    """One promtool test group: input series (selector -> promtool values notation) and, at the end of the timeline,
    the alerts expected as (labels of the alerting series, $value); an empty list means the alert must stay silent."""

    alert: str
    name: str
    series: dict[str, str]
    fires: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _sel(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _const(value: float, n: int) -> str:
    return f"{value!r}x{n}"


def _stable(value: float) -> bool:
    """Whether %.4g gives the same text for every float a PromQL evaluation could round `value` to."""
    return len({f"{value * (1 + e):.4g}" for e in (-1e-12, 0.0, 1e-12)}) == 1


def _latency_cases(s: AlertSettings, n: int) -> list[Case]:
    target, b = s.p99_target_ms / 1000, LATENCY_BUCKETS_S
    # All observations in one bucket (lo, hi]: histogram_quantile answers lo + 0.99 * (hi - lo).
    bad = [(b[i], b[i + 1]) for i in range(len(b) - 1) if b[i] >= target and _stable(b[i] + (b[i + 1] - b[i]) * 0.99)]
    good = [(b[i - 1], b[i]) for i in range(1, len(b)) if b[i] <= target]
    if not bad or not good:
        raise AlertConfigError(f"p99_target_ms={s.p99_target_ms:g} lies outside the server's buckets {b[0]}..{b[-1]} s")

    def series(hi: float) -> dict[str, str]:
        labels = {"job": s.serve_job, "instance": SERVE_INSTANCE, "route": m.PREDICT_ROUTE}
        les = [*(f"{x:g}" for x in b), "+Inf"]
        bucket = m.REQUEST_DURATION.sample("bucket")
        return {
            _sel(bucket, **labels, le=le): "0+60x" + str(n) if le == "+Inf" or float(le) >= hi else "0x" + str(n)
            for le in les
        }

    lo, hi = bad[0]
    return [
        Case("KitServeLatencyP99High", "slow", series(hi), [({"job": s.serve_job}, lo + (hi - lo) * 0.99)]),
        Case("KitServeLatencyP99High", "fast", series(good[-1][1])),
    ]


def _error_cases(s: AlertSettings, n: int) -> list[Case]:
    def series(errors: int) -> dict[str, str]:
        base = {"job": s.serve_job, "instance": SERVE_INSTANCE, "route": m.PREDICT_ROUTE, "method": "POST"}
        return {
            _sel(m.REQUESTS.name, **base, status="200"): f"0+{1000 - errors}x{n}",
            _sel(m.REQUESTS.name, **base, status="503"): f"0+{errors}x{n}",
        }

    bad = math.ceil(1000 * (1 + s.error_ratio) / 2)
    return [
        Case("KitServeErrorRatioHigh", "errors", series(bad), [({"job": s.serve_job}, bad / 1000)]),
        Case("KitServeErrorRatioHigh", "few-errors", series(math.floor(1000 * s.error_ratio / 2))),
    ]


def _gauge_cases(s: AlertSettings, n: int) -> list[Case]:
    lab = {"job": s.serve_job, "instance": SERVE_INSTANCE}
    q_bad, q_good = 2 * s.queue_saturation, s.queue_saturation / 2
    return [
        Case("KitServeDown", "down", {_sel("up", **lab): _const(0, n)}, [(lab, 0.0)]),
        Case("KitServeDown", "up", {_sel("up", **lab): _const(1, n)}),
        Case("KitServeNotReady", "not-ready", {_sel(m.READY.name, **lab): _const(0, n)}, [(lab, 0.0)]),
        Case("KitServeNotReady", "ready", {_sel(m.READY.name, **lab): _const(1, n)}),
        Case(
            "KitServeQueueSaturated", "saturated", {_sel(m.QUEUE_DEPTH.name, **lab): _const(q_bad, n)}, [(lab, q_bad)]
        ),
        Case("KitServeQueueSaturated", "flowing", {_sel(m.QUEUE_DEPTH.name, **lab): _const(q_good, n)}),
    ]


def _monitor_cases(s: AlertSettings, n: int) -> list[Case]:
    lab = {"job": s.monitor_job, "instance": MONITOR_INSTANCE}
    f_drift, f_calm = {**lab, "feature": "length_chars"}, {**lab, "feature": "unk_rate"}

    def drift(flag: int) -> dict[str, str]:
        return {
            _sel(m.DRIFT_P_VALUE.name, **f_drift): _const(0.001, n),
            _sel(m.DRIFT_FEATURE_DETECTED.name, **f_drift): _const(flag, n),
            _sel(m.DRIFT_P_VALUE.name, **f_calm): _const(0.4, n),
            _sel(m.DRIFT_FEATURE_DETECTED.name, **f_calm): _const(0, n),
        }

    ref, shift = 0.25 * (1 - s.class_share_shift), s.class_share_shift
    bad_share = ref + (shift + 1 - ref) / 2  # within [0, 1] and further than `shift` from ref

    def shares(share: float) -> dict[str, str]:
        pos, neg = {**lab, "label": "positive"}, {**lab, "label": "negative"}
        return {
            _sel(m.CLASS_SHARE.name, **pos): _const(share, n),
            _sel(m.REFERENCE_CLASS_SHARE.name, **pos): _const(ref, n),
            _sel(m.CLASS_SHARE.name, **neg): _const(0.3, n),
            _sel(m.REFERENCE_CLASS_SHARE.name, **neg): _const(0.3, n),
        }

    def quality(f1: float, rows: int) -> dict[str, str]:
        return {_sel(m.MACRO_F1.name, **lab): _const(f1, n), _sel(m.LABELLED_ROWS.name, **lab): _const(rows, n)}

    bad_f1, rows = s.quality_floor / 2, s.min_labelled_rows
    return [
        Case("KitMonitorFeatureDrift", "drifted", drift(1), [(f_drift, 0.001)]),
        Case("KitMonitorFeatureDrift", "calm", drift(0)),
        Case(
            "KitMonitorClassShareShift",
            "shifted",
            shares(bad_share),
            [({**lab, "label": "positive"}, abs(bad_share - ref))],
        ),
        Case("KitMonitorClassShareShift", "steady", shares(ref + shift / 2)),
        Case("KitMonitorQualityDrop", "low-f1", quality(bad_f1, 2 * rows), [(lab, bad_f1)]),
        Case("KitMonitorQualityDrop", "good-f1", quality((1 + s.quality_floor) / 2, 2 * rows)),
        Case("KitMonitorQualityDrop", "too-few-labels", quality(bad_f1, rows - 1)),
        *_stale_cases(s, n),
    ]


def _stale_cases(s: AlertSettings, n: int) -> list[Case]:
    """Pushes every minute (fresh), one push at time 0 and none since (stale), and no push ever (absent)."""
    lab = {"job": s.monitor_job, "instance": MONITOR_INSTANCE}
    other = {"job": "another-batch-job", "instance": MONITOR_INSTANCE}  # a gateway holding other groups only
    return [
        Case("KitMonitorStale", "fresh", {_sel(m.PUSH_TIME, **lab): f"0+60x{n}"}),
        Case("KitMonitorStale", "stale", {_sel(m.PUSH_TIME, **lab): _const(0, n)}, [(lab, float(n * 60))]),
        Case("KitMonitorStale", "never-pushed", {_sel(m.PUSH_TIME, **other): f"0+60x{n}"},
             [({"job": s.monitor_job}, 1.0)]),
    ]  # fmt: skip


def _minutes(s: AlertSettings) -> int:
    """Timeline length: the longest rate window or verdict age plus the longest `for:`, with margin."""
    longest = max(duration_seconds(r.for_) for r in alert_rules(s))
    wait = max(duration_seconds(s.rate_window), duration_seconds(s.max_verdict_age))
    return math.ceil((wait + longest) / 60) + 5


def rule_cases(settings: AlertSettings | None = None) -> list[Case]:
    """Every alert's bad (fires) and good (silent) cases, over a timeline long enough for every `for:`."""
    s = settings or AlertSettings()
    n = _minutes(s)
    return _latency_cases(s, n) + _error_cases(s, n) + _gauge_cases(s, n) + _monitor_cases(s, n)


def expand(template: str, labels: dict[str, str], value: float) -> str:
    """What Prometheus makes of an annotation template, for the two forms the rules use: `{{ $labels.x }}` and
    VALUE_TEMPLATE. Anything else left in the text raises, so a new template form cannot slip past the tests."""
    text = template.replace(VALUE_TEMPLATE, f"{value:.4g}")
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda mt: labels.get(mt.group(1), ""), text)
    if "{{" in text:
        raise AlertConfigError(f"annotation {template!r} uses a template form rule_tests cannot expand")
    return text


def _group(case: Case, s: AlertSettings, n: int) -> dict:
    rule = next(r for r in alert_rules(s) if r.alert == case.alert)
    end = f"{n}m"
    exp = [
        {
            "exp_labels": {**labels, "severity": rule.severity, "component": rule.component},
            "exp_annotations": {
                "summary": expand(rule.summary, labels, value),
                "description": expand(rule.description, labels, value),
                "runbook_url": rule.runbook_url,
            },
        }
        for labels, value in case.fires
    ]
    checks = [{"eval_time": end, "alertname": case.alert, "exp_alerts": exp}]
    wait = duration_seconds(rule.for_)
    if case.fires and wait >= 120:  # half-way through `for:` the alert is pending, not firing
        checks.insert(0, {"eval_time": f"{int(wait // 120)}m", "alertname": case.alert, "exp_alerts": []})
    series = [{"series": sel, "values": values} for sel, values in case.series.items()]
    return {"name": f"{case.alert}/{case.name}", "interval": "1m", "input_series": series, "alert_rule_test": checks}


def render_rule_tests(settings: AlertSettings | None = None, *, rules_file: str = "kit-alerts.rules.yml") -> str:
    """The promtool test file (YAML) for the rules render_rules writes; `rules_file` is relative to the test file."""
    s = settings or AlertSettings()
    n = _minutes(s)
    doc = {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": [_group(c, s, n) for c in rule_cases(s)]}
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def write_rule_tests(out_dir: str | Path, settings: AlertSettings | None = None) -> Path:
    """Write `kit-alerts.test.yml` atomically beside the rules file write_rules writes into `out_dir`."""
    return write_text(Path(out_dir) / "kit-alerts.test.yml", render_rule_tests(settings))
