"""Alert rules of the monitor: the metric-name contract against the server's real exposition, the rules' fields and
runbook anchors, and the real promtool: `check rules` on both renderings and `test rules` per alert (fires / silent)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from kit.monitor import metric_names as m
from kit.monitor.alerts import (
    ALERT_NAMES,
    AlertConfigError,
    AlertSettings,
    alert_rules,
    duration_seconds,
    render_prometheus_rule,
    render_rules,
    write_rules,
)
from kit.monitor.rule_tests import expand, rule_cases, write_rule_tests
from kit.serve.telemetry import ServeMetrics

REPO = Path(__file__).resolve().parents[1]
RUNBOOKS = REPO / "docs" / "runbooks.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: apt-get install prometheus (.ci/run installs it)"
)
# Non-default settings: the rules and their generated tests must agree for any settings, not just the defaults.
CUSTOM = AlertSettings(
    p99_target_ms=250,
    error_ratio=0.05,
    queue_saturation=40,
    class_share_shift=0.3,
    quality_floor=0.7,
    min_labelled_rows=20,
    rate_window="2m",
    for_durations={"KitServeDown": "1m", "KitMonitorFeatureDrift": "1h"},
    severities={"KitServeLatencyP99High": "critical"},
    runbook_base_url="https://docs.example.org/kit/runbooks/",
)


def _samples(registry_text: str) -> dict[str, set[str]]:
    """Sample name -> label names seen, from a text exposition."""
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(registry_text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def _missing(contract: tuple[m.Series, ...], samples: dict[str, set[str]]) -> list[str]:
    problems = []
    for series in contract:
        name = series.sample("bucket") if series.kind == "histogram" else series.name
        if name not in samples:
            problems.append(f"{name}: not exposed")
        elif not set(series.labels) <= samples[name]:
            problems.append(f"{name}: labels {sorted(samples[name])} lack {sorted(set(series.labels) - samples[name])}")
    return problems


def test_serve_series_of_the_contract_are_what_the_server_exposes():
    metrics = ServeMetrics(["negative", "positive"], {"version": "v1", "variant": "onnx_int8"})
    metrics.observe_request("/predict", "POST", 200, 0.012)
    metrics.observe_batch(4, 0.01)
    samples = _samples(metrics.render().decode())
    assert _missing(m.SERVE_SERIES, samples) == []
    assert samples[m.PREDICTIONS.name] == {"label"}
    # The check can fail: a misspelled name and a label the server does not set are both reported.
    wrong = (
        m.Series("kit_serve_request_total", "counter", (), "", ""),
        m.Series(m.READY.name, "gauge", ("pod",), "", ""),
    )
    assert [p.split(":")[0] for p in _missing(wrong, samples)] == ["kit_serve_request_total", m.READY.name]


def test_monitor_gauges_expose_the_contract_names_and_labels():
    registry = CollectorRegistry()
    gauges = m.monitor_gauges(registry)
    assert set(gauges) == {s.name for s in m.MONITOR_SERIES}
    for s in m.MONITOR_SERIES:
        g = gauges[s.name]
        (g.labels(*(f"x{i}" for i in range(len(s.labels)))) if s.labels else g).set(0.5)
    assert _missing(m.MONITOR_SERIES, _samples(generate_latest(registry).decode())) == []
    assert all(s.name.startswith("kit_monitor_") for s in m.MONITOR_SERIES)
    assert {s.name for s in m.MONITOR_SERIES if s.unit == "ratio"} == {
        m.CLASS_SHARE.name,
        m.REFERENCE_CLASS_SHARE.name,
        m.MACRO_F1.name,
    }


@pytest.mark.parametrize("settings", [AlertSettings(), CUSTOM], ids=["defaults", "custom"])
def test_every_rule_has_for_severity_summary_description_and_runbook(settings):
    rules = alert_rules(settings)
    assert [r.alert for r in rules] == list(ALERT_NAMES)
    for r in rules:
        d = r.to_dict()
        assert d["for"] == settings.for_(r.alert) and duration_seconds(d["for"]) > 0
        assert d["labels"]["severity"] in {"critical", "warning", "info"}
        assert set(d["annotations"]) == {"summary", "description", "runbook_url"}
        assert d["annotations"]["runbook_url"].startswith(settings.runbook_base_url + "#")
    by_name = {r.alert: r for r in rules}
    assert by_name["KitServeDown"].for_ == ("1m" if settings is CUSTOM else "2m")
    assert by_name["KitServeLatencyP99High"].severity == ("critical" if settings is CUSTOM else "warning")
    assert f"> {settings.p99_target_ms / 1000:g}" in by_name["KitServeLatencyP99High"].expr


def test_prometheus_rule_holds_the_same_groups_as_the_rules_file():
    plain = yaml.safe_load(render_rules(CUSTOM))
    cr = yaml.safe_load(render_prometheus_rule(CUSTOM, namespace="prod"))
    assert cr["apiVersion"] == "monitoring.coreos.com/v1" and cr["kind"] == "PrometheusRule"
    assert cr["metadata"]["namespace"] == "prod" and cr["metadata"]["labels"]
    assert cr["spec"]["groups"] == plain["groups"]
    assert [g["name"] for g in plain["groups"]] == ["kit-serve", "kit-monitor"]


def _runbook_anchors() -> set[str]:
    """Heading ids exactly as MkDocs makes them (Python-Markdown's toc extension, its default slugify)."""
    import markdown

    md = markdown.Markdown(extensions=["toc"])
    md.convert(RUNBOOKS.read_text(encoding="utf-8"))

    def walk(tokens: list[dict]) -> set[str]:
        return {t["id"] for t in tokens} | {i for t in tokens for i in walk(t["children"])}

    return walk(md.toc_tokens)


def test_every_runbook_url_points_at_a_section_of_the_runbooks_page():
    anchors = _runbook_anchors()
    urls = [r.runbook_url for r in alert_rules(CUSTOM)]
    missing = [u for u in urls if u.split("#", 1)[1] not in anchors]
    assert not missing, f"docs/runbooks.md has no section for {missing}"
    assert "kitserveunknownalert" not in anchors  # the lookup can miss
    # Each alert's section tells how to confirm it with PromQL.
    text = RUNBOOKS.read_text(encoding="utf-8")
    for name in ALERT_NAMES:
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert "```promql" in section, f"runbook section {name} lacks a PromQL query"


def test_settings_refuse_unknown_alerts_and_bad_durations():
    with pytest.raises(ValidationError, match="KitServeTypo"):
        AlertSettings(for_durations={"KitServeTypo": "5m"})
    with pytest.raises(ValidationError, match="rate_window"):
        AlertSettings(rate_window="5 minutes")
    with pytest.raises(ValidationError, match="runbook_base_url"):
        AlertSettings(runbook_base_url="https://docs.example.org/runbooks/#top")
    with pytest.raises(AlertConfigError, match="not a Prometheus duration"):
        duration_seconds("5min")
    assert duration_seconds("1h30m") == 5400
    with pytest.raises(AlertConfigError, match="p99_target_ms=20000"):
        rule_cases(AlertSettings(p99_target_ms=20000))


def test_rule_tests_cover_every_alert_firing_and_silent():
    cases = rule_cases(CUSTOM)
    assert {c.alert for c in cases if c.fires} == set(ALERT_NAMES)
    assert {c.alert for c in cases if not c.fires} == set(ALERT_NAMES)
    assert expand('{{ $labels.job }} at {{ $value | printf "%.4g" }}', {"job": "j"}, 0.12345) == "j at 0.1235"
    with pytest.raises(AlertConfigError, match="template form"):
        expand("{{ $value | humanize }}", {}, 1.0)


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
@pytest.mark.parametrize("settings", [AlertSettings(), CUSTOM], ids=["defaults", "custom"])
def test_promtool_checks_both_renderings_and_passes_the_unit_tests(tmp_path, settings):
    paths = write_rules(tmp_path, settings)
    test_file = write_rule_tests(tmp_path, settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kit-alerts.rules.yml",
        "kit-alerts.test.yml",
        "prometheusrule.yaml",
    ]
    check = _promtool("check", "rules", paths["rules"].name, cwd=tmp_path)
    assert check.returncode == 0 and f"SUCCESS: {len(ALERT_NAMES)} rules found" in check.stdout, (
        check.stdout + check.stderr
    )
    # promtool reads plain rule files only: check the custom resource's spec as one.
    spec = yaml.safe_load(paths["prometheus_rule"].read_text())["spec"]
    (tmp_path / "from-cr.rules.yml").write_text(yaml.safe_dump(spec))
    assert _promtool("check", "rules", "from-cr.rules.yml", cwd=tmp_path).returncode == 0
    unit = _promtool("test", "rules", test_file.name, cwd=tmp_path)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


@needs_promtool
def test_promtool_unit_tests_fail_when_the_rules_stop_matching_them(tmp_path):
    # Rules from other settings than the tests: the latency bad case no longer fires, the for: check moves.
    (tmp_path / "kit-alerts.rules.yml").write_text(render_rules(AlertSettings(p99_target_ms=900)))
    write_rule_tests(tmp_path, AlertSettings())
    unit = _promtool("test", "rules", "kit-alerts.test.yml", cwd=tmp_path)
    assert unit.returncode != 0 and "KitServeLatencyP99High/slow" in unit.stdout + unit.stderr


@needs_promtool
def test_promtool_check_rules_fails_on_a_broken_rule(tmp_path):
    doc = yaml.safe_load(render_rules())
    doc["groups"][0]["rules"][0]["expr"] = "histogram_quantile(0.99, rate(kit_serve_request_duration_seconds_bucket[5m]"
    (tmp_path / "broken.rules.yml").write_text(yaml.safe_dump(doc))
    out = _promtool("check", "rules", "broken.rules.yml", cwd=tmp_path)
    assert out.returncode != 0 and "parse error" in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
    doc = yaml.safe_load(render_rules())
    doc["groups"][1]["rules"][0]["for"] = "15 minutes"
    (tmp_path / "broken.rules.yml").write_text(yaml.safe_dump(doc))
    assert _promtool("check", "rules", "broken.rules.yml", cwd=tmp_path).returncode != 0
