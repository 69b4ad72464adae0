"""`kit monitor` (kit.monitor.commands) through the root CLI: `check` on hand-written prediction logs (summary,
JSON, exit codes, errors through the one boundary, a real Pushgateway push), and `rules` / `dashboard` files."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from kit.monitor import metric_names as m
from kit.monitor.commands import DRIFT_EXIT
from kit.monitor.exporter import WindowSignals
from tests.fixtures_monitor import WINDOW, features, records, small_reference, write_log
from tests.fixtures_prometheus import PUSHGATEWAY, run_pushgateway

INSTANCE = "kit-monitor-cli-test"


def kit(*args: str):
    from kit.cli import app

    return CliRunner().invoke(app, ["monitor", *map(str, args)])


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory) -> Path:
    return small_reference().save(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def v2_ref_dir(tmp_path_factory) -> Path:
    return small_reference(version="v2").save(tmp_path_factory.mktemp("reference-v2"))


def calm_log(directory: Path, **kw) -> Path:
    write_log(directory, records(features(WINDOW, seed=8), **kw), extra_lines=('{"request_id": "broken"',))
    return directory


# ---------------------------------------------------------------------------------------------------------- check
def test_check_calm_window_prints_the_summary_and_writes_the_signals(tmp_path, ref_dir):
    out = tmp_path / "out" / "verdict.json"
    res = kit("check", calm_log(tmp_path / "logs"), "--reference", ref_dir, "--rows", 100, "--out", out)
    assert res.exit_code == 0, res.output
    assert "1 file(s), 120 record(s), 1 corrupt line(s) skipped" in res.stdout
    assert "window: newest 100 records: 100 record(s), model v1" in res.stdout
    assert "status: no drift" in res.stdout
    assert all(name in res.stdout for name in ("length_chars", "confidence", "label", "threshold", "p-value"))
    signals = WindowSignals.model_validate_json(out.read_text())
    assert signals.verdict.status == "no drift" and signals.verdict.rows == 100
    assert not list(out.parent.glob(".*"))  # written atomically: no temp file left


def test_check_drift_exits_3_only_with_fail_on_drift(tmp_path, ref_dir):
    write_log(tmp_path, records(features(WINDOW, seed=9, length_scale=2.5)))
    res = kit("check", tmp_path, "--reference", ref_dir)
    assert res.exit_code == 0, res.output
    assert "status: drift" in res.stdout and "YES" in res.stdout
    res = kit("check", tmp_path, "--reference", ref_dir, "--fail-on-drift")
    assert res.exit_code == DRIFT_EXIT == 3, res.output


def test_check_since_takes_the_recent_records_and_a_small_window_is_not_enough_data(tmp_path, ref_dir):
    start = datetime.now(UTC) - timedelta(seconds=WINDOW)
    calm_log(tmp_path, start=start)  # one record per second up to now
    res = kit("check", tmp_path, "--reference", ref_dir, "--since", "1h", "--fail-on-drift")
    assert res.exit_code == 0 and f"last 1h: {WINDOW} record(s)" in res.stdout, res.output
    res = kit("check", tmp_path, "--reference", ref_dir, "--since", "30s", "--fail-on-drift")
    assert res.exit_code == 0 and "status: not enough data" in res.stdout, res.output
    # No traffic at all in the window: still a verdict ("not enough data", 0 rows), so the monitor stays fresh.
    old = tmp_path / "old"
    calm_log(old, start=start - timedelta(days=1))
    res = kit("check", old, "--reference", ref_dir, "--since", "15m")
    assert res.exit_code == 0 and "last 15m: 0 record(s)" in res.stdout, res.output


def test_check_joins_delayed_labels(tmp_path, ref_dir):
    recs = records(features(WINDOW, seed=8))
    write_log(tmp_path / "logs", recs)
    lines = ["request_id,label"] + [f"{r['request_id']},{r['label']}" for r in recs[::2]] + ["ghost,positive", ","]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    res = kit("check", tmp_path / "logs", "--reference", ref_dir, "--labels", tmp_path / "labels.csv", "--rows", 100)
    assert res.exit_code == 0, res.output
    assert "labels: 61 read, 60 matched, 1 without a record, 1 unusable; 50 in the window" in res.stdout
    assert "macro-F1: 1.0000 on 50 delayed label(s)" in res.stdout


def test_check_names_unusable_input_and_exits_1(tmp_path, ref_dir, v2_ref_dir):
    res = kit("check", tmp_path / "nope", "--reference", ref_dir)
    assert res.exit_code == 1 and "nope: prediction log not found" in res.stderr, res.output
    (tmp_path / "empty").mkdir()
    res = kit("check", tmp_path / "empty", "--reference", ref_dir)
    assert res.exit_code == 1 and "no prediction log files" in res.stderr, res.output
    res = kit("check", calm_log(tmp_path / "logs"), "--reference", tmp_path / "no-ref")
    assert res.exit_code == 1 and "profile.json: reference file missing" in res.stderr
    res = kit("check", tmp_path / "logs", "--reference", v2_ref_dir)
    assert res.exit_code == 1 and "made for model version 'v2', the window was served by 'v1'" in res.stderr
    write_log(tmp_path / "logs", records(features(5, seed=3), version="v2", prefix="x"), file_no=2)
    res = kit("check", tmp_path / "logs", "--reference", ref_dir)
    assert res.exit_code == 1 and "2 model versions: 'v1' (120 rows), 'v2' (5 rows)" in res.stderr
    res = kit("check", tmp_path / "logs", "--reference", ref_dir, "--since", "soon")
    assert res.exit_code == 1 and "--since 'soon': not a duration" in res.stderr
    res = kit("check", tmp_path / "logs", "--reference", ref_dir, "--since", "1h", "--rows", 5)
    assert res.exit_code == 1 and "not both" in res.stderr
    res = kit("check", tmp_path / "logs", "--reference", ref_dir, "--push-url", "gateway:9091")
    assert res.exit_code == 1 and "--push-url" in res.stderr


def _pushed(url: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {labels without job/instance: value}} of the test instance's group on the gateway."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in fam.samples:
            if s.labels.get("job") == m.MONITOR_JOB and s.labels.get("instance") == INSTANCE:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "instance")))
                out.setdefault(s.name, {})[key] = s.value
    return out


@pytest.mark.skipif(PUSHGATEWAY is None, reason="prometheus-pushgateway not found (.ci/run installs it)")
def test_check_pushes_the_windows_gauges_to_a_real_pushgateway(tmp_path, ref_dir):
    with run_pushgateway(tmp_path) as (url, _):
        write_log(tmp_path / "drift", records(features(WINDOW, seed=9, length_scale=2.5)))
        args = ("--reference", ref_dir, "--push-url", url, "--instance", INSTANCE, "--out", tmp_path / "v.json")
        res = kit("check", tmp_path / "drift", *args)
        assert res.exit_code == 0 and f"pushed to {url} (job=kit-monitor, instance={INSTANCE})" in res.stdout
        signals = WindowSignals.model_validate_json((tmp_path / "v.json").read_text())
        got = _pushed(url)
        assert got[m.DRIFT_DETECTED.name][()] == 1 and got[m.WINDOW_ROWS.name][()] == WINDOW
        flags = {dict(k)["feature"]: v for k, v in got[m.DRIFT_FEATURE_DETECTED.name].items()}
        assert flags == {n: float(f.drifted) for n, f in signals.verdict.features.items()} and flags["length_chars"]
        p = {dict(k)["feature"]: v for k, v in got[m.DRIFT_P_VALUE.name].items()}
        assert p == pytest.approx({n: f.p_value for n, f in signals.verdict.features.items()})
        assert "push_time_seconds" in got
        # The next window replaces the group: a calm one leaves no drift decision behind.
        res = kit(
            "check", calm_log(tmp_path / "calm"), "--reference", ref_dir, "--push-url", url, "--instance", INSTANCE
        )
        assert res.exit_code == 0, res.output
        got = _pushed(url)
        assert got[m.DRIFT_DETECTED.name][()] == 0 and set(got[m.DRIFT_FEATURE_DETECTED.name].values()) == {0.0}


def test_check_names_an_unreachable_gateway(tmp_path, ref_dir):
    from kit.deploy.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    res = kit("check", calm_log(tmp_path), "--reference", ref_dir, "--push-url", url)
    assert res.exit_code == 1 and f"cannot reach the Pushgateway at {url} to push" in res.stderr


# ------------------------------------------------------------------------------------------- rules and dashboard
def test_rules_from_params_and_defaults(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"monitor": {"latency_p99_ms": 250.0}, "deploy": {"namespace": "ml-prod"}}))
    res = kit("rules", tmp_path / "rules", "--params", params)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "rules").iterdir())
    assert names == ["kit-alerts.rules.yml", "kit-alerts.test.yml", "prometheusrule.yaml"]
    cr = yaml.safe_load((tmp_path / "rules" / "prometheusrule.yaml").read_text())
    assert cr["metadata"]["namespace"] == "ml-prod"
    rules = {r["alert"]: r for g in cr["spec"]["groups"] for r in g["rules"]}
    assert rules["KitServeLatencyP99High"]["expr"].endswith("> 0.25")
    res = kit("rules", tmp_path / "defaults", "--params", tmp_path / "absent.yaml", "--no-rule-tests")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "defaults").iterdir()) == ["kit-alerts.rules.yml", "prometheusrule.yaml"]
    promtool = shutil.which("promtool")
    if promtool:  # the rule tests the command wrote pass against the rules it wrote
        unit = subprocess.run([promtool, "test", "rules", "kit-alerts.test.yml"], cwd=tmp_path / "rules",
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert unit.returncode == 0, unit.stdout + unit.stderr


def test_dashboard_writes_the_board_and_provisioning(tmp_path):
    res = kit("dashboard", tmp_path)
    assert res.exit_code == 0, res.output
    (board,) = (tmp_path / "dashboards").glob("*.json")
    assert json.loads(board.read_text())["panels"]
    assert (tmp_path / "provisioning" / "datasources" / "kit.yaml").is_file()
