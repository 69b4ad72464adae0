"""The deploy stage function end to end on a tiny serving model in a throwaway project: run_deploy writes a typed
reports/serve.json, the plots and valid manifests, with no absolute machine path in any of them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from kit.core.errors import DeployError
from kit.core.layout import LAYOUT
from kit.core.params import load_params
from kit.core.reports import ServeReport, read_report
from kit.deploy.manifests import load_manifests
from kit.deploy.validate import schema_validate
from tests.fixtures_deploy import N_MANIFESTS, TEXTS, tiny_serving_dir, write_texts_parquet

# The serve/deploy sections of tests/params_tiny.yaml, shortened further: one batching level and one without.
TINY = {
    "serve": {"max_batch_size": 4, "max_length": 32, "threads": 1, "max_delay_ms": 2.0, "graceful_timeout_s": 5},
    "deploy": {"concurrency_levels": [1, 4], "ratio_concurrency": 4, "nobatch_levels": [4], "duration_s": 0.6,
               "warmup_s": 0.2, "bare_seconds": 0.1, "bare_batch_sizes": [1, 4], "max_texts": 200,
               "sample_interval_s": 0.1, "startup_timeout_s": 90, "sweep_full_up_to": 4, "goal_gain_concurrency": 4},
}  # fmt: skip


def _tiny_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    (root / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(tiny_serving_dir(), root / LAYOUT.serving_dir)  # a copy, not a link: paths stay inside root
    write_texts_parquet(root / LAYOUT.split("test"), TEXTS * 5)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return _tiny_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def ran(project: Path) -> tuple[Path, ServeReport]:
    from kit.deploy.stage import run_deploy

    params = load_params(project / "params.yaml")
    return project, run_deploy(params, project, progress=False)


def test_run_deploy_writes_a_report_that_reads_back_typed(ran):
    root, report = ran
    back = read_report(root / LAYOUT.serve_report, ServeReport)
    assert back == report and back.stage == "deploy"
    assert back.config.serve.batch_wait == "adaptive" and back.config.serve.max_batch_size == 4
    assert [r["concurrency"] for r in back.levels] == [1, 4] and back.ratio_concurrency == 4
    # The ceiling is the best bare configuration measured: every one is in the grid beside it.
    best = max(back.bare.grid, key=lambda g: g.throughput_rps or 0.0)
    assert (back.bare.batch_size, back.bare.bucketing) == (best.batch_size, best.bucketing)
    assert {(g.batch_size, g.bucketing) for g in back.bare.grid} == {(1, False), (4, False), (4, True)}
    assert back.bare.unbatched.batch_size == 1 and back.bare_throughput_rps == best.throughput_rps
    # The goals the report states, judged at the plan's level, and the stage's own time.
    assert [g.name for g in back.goals] == [
        "server_over_bare", "p99_ms_at_ratio", "batching_over_nobatch_at_4", "batching_over_nobatch_min_from_4"
    ]  # fmt: skip
    assert back.targets == {g.name: g.met for g in back.goals} and back.ratio_concurrency_rule
    assert back.wall_s is not None and back.wall_s >= back.config.loadtest_s > 0
    assert back.throughput_per_pod_rps == back.levels[1]["throughput_rps"]
    assert back.shutdown["batching"].exit_code == 0


def test_no_report_key_names_a_batch_size(ran):
    root, _ = ran

    def keys(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from keys(v)
        elif isinstance(node, list):
            for v in node:
                yield from keys(v)

    raw = json.loads((root / LAYOUT.serve_report).read_text())
    assert not [k for k in keys(raw) if re.search(r"batch_?\d|(?:^|_)\d+_?batch", k)]


def test_run_deploy_renders_valid_manifests_sized_from_the_report(ran):
    root, report = ran
    out = root / "deploy" / "k8s"
    assert report.manifests is not None and report.manifests.ok and report.manifests.dir == "deploy/k8s"
    assert sorted(report.manifests.files) == sorted(str(f.relative_to(root)) for f in out.rglob("*.yaml"))
    assert len(report.manifests.files) == N_MANIFESTS
    assert [r for r in schema_validate(load_manifests(out), "1.33.0") if r["errors"]] == []
    assert f"schema: {N_MANIFESTS}/{N_MANIFESTS} manifests valid" in report.manifests.lines
    dep = yaml.safe_load((out / "online" / "deployment.yaml").read_text())
    requests = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["memory"] != "512Mi" and "measured" in dep["metadata"]["annotations"]["kit.io/sizing"]


def test_run_deploy_saves_the_plots(ran):
    root, report = ran
    assert report.plots == ["reports/plots/serve_throughput.png", "reports/plots/serve_p99.png"]
    assert all((root / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in report.plots)


def test_no_absolute_machine_path_in_the_report_or_the_manifests(ran):
    root, report = ran
    assert report.model.dir == "models/serving" and report.config.texts_path == "data/test.parquet"
    texts = [(root / LAYOUT.serve_report).read_text()]
    texts += [f.read_text() for f in (root / "deploy" / "k8s").rglob("*.yaml")]
    for needle in (str(root), str(root.resolve()), str(tiny_serving_dir()), "/tmp/"):
        assert not [t for t in texts if needle in t], needle
    rows = json.loads(texts[0])["manifests"]["schema_rows"]
    assert rows and all(not Path(r["file"]).is_absolute() for r in rows)


def test_invalid_manifests_fail_the_stage_naming_the_files(ran, monkeypatch):
    root, _ = ran
    import kit.deploy.stage as stage
    from kit.deploy.validate import ValidationReport

    def broken(directory, version, checkov=None, *, root=None):
        row = {"file": str(Path(directory) / "online" / "hpa.yaml"), "kind": "HorizontalPodAutoscaler",
               "name": "kit-serve", "checked_with": "test", "errors": ["spec.minReplicaz: unknown field"]}  # fmt: skip
        return ValidationReport(schema=[row], checkov=None, checkov_note="disabled")

    monkeypatch.setattr(stage, "validate_dir", broken)
    canned = read_report(root / LAYOUT.serve_report, ServeReport).model_dump()
    monkeypatch.setattr(stage, "_measure", lambda params, root, progress: ServeReport.model_validate(canned))
    with pytest.raises(DeployError, match=r"failed validation: deploy/k8s/online/hpa.yaml \("):
        stage.run_deploy(load_params(root / "params.yaml"), root)
    written = read_report(root / LAYOUT.serve_report, ServeReport)
    assert written.manifests.ok is False
    assert any("deploy/k8s/online/hpa.yaml" in line and "minReplicaz" in line for line in written.manifests.lines)


def test_package_apis_load_lazily_and_resolve():
    import subprocess
    import sys

    import kit.deploy
    import kit.serve

    # The CLI mounts kit.deploy.commands and kit.serve.commands: importing them must not load the heavy parts.
    probe = ("import sys, kit.deploy.commands, kit.serve.commands; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'onnxruntime', 'kubernetes', "
             "'numpy', 'torch', 'transformers', 'sklearn'} or m in {'kit.serve.app', 'kit.deploy.manifests'}))")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    for pkg in (kit.deploy, kit.serve):
        assert pkg.__doc__ and all(getattr(pkg, name) is not None for name in pkg.__all__)
        assert set(pkg.__all__) <= set(dir(pkg))
    assert kit.deploy.run_deploy.__module__ == "kit.deploy.stage"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        kit.deploy.nothing  # noqa: B018


def test_notebook_only_calls_run_deploy_and_its_outputs_hold_no_machine_path(tmp_path):
    from kit.core.runner import STAGES, run_stage

    repo = Path(__file__).resolve().parents[1]
    nb = json.loads((repo / STAGES["deploy"].notebook).read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert code.count("run_deploy(P, ROOT)") == 1
    assert not re.search(r"write_|save_|render\(|validate_dir|run_loadtest|open\(", code)  # no work, no writes

    root = _tiny_project(tmp_path / "proj")
    (root / "notebooks").mkdir()
    shutil.copy(repo / STAGES["deploy"].notebook, root / "notebooks")
    executed = json.loads(run_stage("deploy", root=root).read_text())
    outputs = json.dumps([c.get("outputs", []) for c in executed["cells"] if c["cell_type"] == "code"])
    assert f"schema: {N_MANIFESTS}/{N_MANIFESTS} manifests valid" in outputs and "image/png" in outputs
    for needle in (str(root), str(root.resolve()), str(tmp_path), str(tiny_serving_dir().parent)):
        assert needle not in outputs, needle
