"""The model-size sweep: the depth and INT8 knobs reach the built variants, the optimize headline carries the served
model's macro-F1, latency and size, the Pareto and pick rules on synthetic runs, `dvc exp show --json` parsed from real
DVC output, and a real DVC queue of two tiny optimize experiments read back by `kit sweep report`."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import onnx
import pytest
import yaml
from pydantic import ValidationError

from kit.core.errors import KitError, ReportError
from kit.core.headline import headline_values
from kit.core.params import OptimizeParams
from kit.optimize.distill import student_layers
from kit.optimize.export import load_classifier, model_spec, quantize_int8
from kit.optimize.sweep import SweepPoint, exp_show, pareto_front, pick_for_budget, sweep_points
from kit.optimize.sweep_figures import sweep_report
from kit.optimize.variants import build_variants
from tests.conftest import REPO, copy_project, run_env
from tests.fixtures_optimize import TEXTS, tiny_model  # noqa: F401

INT8 = {"per_channel": True, "reduce_range": True, "weight_type": "qint8"}
GIT_ID = ["-c", "user.name=kit", "-c", "user.email=kit@example.com"]


def sh(args: list[str], cwd: Path, timeout: int = 600) -> str:
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=run_env(), timeout=timeout)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


# ------------------------------------------------------------------------------------------- the knobs
def test_a_depth_count_keeps_evenly_spread_teacher_layers():
    assert student_layers(3, 6) == [0, 2, 4]  # the old default list, now one number a sweep can set
    assert student_layers(2, 6) == [0, 3] and student_layers(1, 6) == [0] and student_layers(6, 6) == list(range(6))
    assert student_layers([5, 1], 6) == [5, 1]  # an explicit list is kept as given
    with pytest.raises(KitError, match=r"optimize.student_layers: 7 layers asked but the teacher has 6"):
        student_layers(7, 6)


def test_params_take_a_depth_or_a_list_and_the_int8_base():
    assert OptimizeParams(student_layers=4, int8_base="plain").student_layers == 4
    assert OptimizeParams(student_layers=[0, 5]).student_layers == [0, 5]
    assert OptimizeParams().int8_base == "fused"
    for bad in ({"student_layers": 0}, {"student_layers": [1, 1]}, {"int8_base": "onnx"}):
        with pytest.raises(ValidationError):
            OptimizeParams(**bad)


def _scale_shapes(path: Path) -> set[tuple[int, ...]]:
    return {tuple(i.dims) for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_scale")}


def test_int8_from_the_plain_export_and_per_channel_scales(tiny_model, tmp_path):  # noqa: F811
    built = build_variants(tiny_model, tmp_path, "onnx", ["int8"], TEXTS, 32, 1e-4, INT8, int8_base="plain")
    assert [v.name for v in built] == ["onnx_fp32", "onnx_int8"]
    assert not (tmp_path / "onnx_optimized.onnx").exists()  # the plain base needs no fused graph
    assert built[1].notes[0].startswith("quantized from onnx_fp32")
    ops = {n.op_type for n in onnx.load(str(built[1].path)).graph.node}
    assert "MatMulInteger" in ops and not ops & {"QAttention", "Attention", "SkipLayerNormalization"}
    # Per channel: a scale per output channel (hidden 32, intermediate 64, 3 labels); per tensor: scalars only.
    assert {(32,), (64,)} <= _scale_shapes(built[1].path)
    spec = model_spec(load_classifier(tiny_model))
    flat = quantize_int8(built[0].path, tmp_path / "per_tensor.onnx", spec, **{**INT8, "per_channel": False})
    assert _scale_shapes(flat) == {()}


def test_optimize_headline_has_the_served_models_f1_latency_and_size():
    report = json.loads((REPO / "reports/bench.json").read_text())
    got = headline_values("optimize", report)
    served = next(v for v in report["variants"] if v["name"] == report["headline"]["variant"])
    assert got["serve_f1"] == round(report["headline"]["macro_f1"], 4)
    assert got["p50_ms"] == round(report["headline"]["p50_latency_ms"], 4)
    assert got["size_mb"] == round(served["size_mb"], 4)
    report["variants"] = [v for v in report["variants"] if v is not served]
    with pytest.raises(ReportError, match=r"headline figure optimize.size_mb is missing"):
        headline_values("optimize", report)


# ------------------------------------------------------------------------------------- Pareto and pick
def _pt(name: str, f1: float, ms: float, mb: float) -> SweepPoint:
    return SweepPoint(name=name, rev=name, student_layers=3, int8_base="fused", int8_per_channel=True, max_length=64,
                      serve_f1=f1, p50_ms=ms, size_mb=mb)  # fmt: skip


RUNS = [
    _pt("deep", 0.800, 10.0, 90.0),
    _pt("mid", 0.795, 4.0, 30.0),
    _pt("mid_worse", 0.790, 5.0, 40.0),  # beaten by mid on all three
    _pt("mid_bigger", 0.795, 4.0, 35.0),  # ties mid on two, larger: beaten
    _pt("shallow", 0.700, 1.0, 10.0),
    _pt("small_slow", 0.650, 12.0, 5.0),  # the smallest: on the front though slow and worst
]


def test_pareto_front_keeps_only_unbeaten_runs():
    assert {RUNS[i].name for i in pareto_front(RUNS)} == {"deep", "mid", "shallow", "small_slow"}
    twin = [_pt("a", 0.8, 2.0, 3.0), _pt("b", 0.8, 2.0, 3.0)]
    assert pareto_front(twin) == {0, 1}  # equal runs do not beat each other


def test_pick_is_the_fastest_within_tolerance_of_the_best_that_fits():
    assert pick_for_budget(RUNS, 12.0).point.name == "mid"  # 0.5 points under deep, 6 ms faster
    assert pick_for_budget(RUNS, 12.0, tolerance_pts=0.4).point.name == "deep"
    assert pick_for_budget(RUNS, None).point.name == "mid"
    # At 5 ms deep no longer fits: the best that fits is mid; mid_worse is within 0.5 points but slower.
    assert pick_for_budget(RUNS, 5.0).point.name == "mid"
    assert pick_for_budget(RUNS, 3.0).point.name == "shallow"
    none = pick_for_budget(RUNS, 0.5)
    assert none.point is None and "fastest is shallow at 1.00 ms" in none.reason


# ------------------------------------------------------------------------------- real `dvc exp show`
# A stand-in optimize stage: writes the headline metrics and bench report from its params, in a second.
_FAKE_STAGE = """
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))
o = p["optimize"]
depth = o["student_layers"] if isinstance(o["student_layers"], int) else len(o["student_layers"])
plain = o.get("int8_base") == "plain"
pathlib.Path("reports/metrics").mkdir(parents=True, exist_ok=True)
m = {"serve_f1": 0.6 + 0.02 * depth, "p50_ms": 1.0 + depth - 0.5 * plain, "size_mb": 4.0 * depth,
     "speedup_b1": 9.0 / depth, "speedup_b32": 6.0 / depth, "f1_drop_pts": 0.3}
json.dump(m, open("reports/metrics/optimize.json", "w"))
json.dump({"headline": {"variant": f"student_int8_d{depth}"}}, open("reports/bench.json", "w"))
"""


@pytest.fixture(scope="module")
def fake_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("fake") / "proj"
    repo.mkdir()
    (repo / "stage.py").write_text(_FAKE_STAGE)
    # No int8_base key: an older params file reads as the schema default (and `-S +key=` adds it).
    params = {"model": {"max_length": 48}, "optimize": {"student_layers": [0, 2], "int8_per_channel": False}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    stage = {"cmd": "python stage.py", "deps": ["stage.py"], "params": ["model.max_length", "optimize"],
             "outs": [{"reports/bench.json": {"cache": False}}],
             "metrics": [{"reports/metrics/optimize.json": {"cache": False}}]}  # fmt: skip
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"optimize": stage}}))
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    sh(["dvc", "repro", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", *GIT_ID, "commit", "-qm", "baseline"], repo)
    sh(["dvc", "exp", "run", "-q", "-n", "deep", "-S", "optimize.student_layers=4", "-S", "+optimize.int8_base=plain"],
       repo)  # fmt: skip
    sh(["dvc", "exp", "run", "--queue", "-q", "-n", "waiting", "-S", "optimize.student_layers=5"], repo)
    return repo


def test_exp_show_json_of_real_dvc_reads_as_sweep_points(fake_repo):
    points, skipped = sweep_points(exp_show(fake_repo), cwd=fake_repo)
    head = sh(["git", "rev-parse", "HEAD"], fake_repo).strip()
    by_name = {p.name: p for p in points}
    assert set(by_name) == {"deep", next(p.name for p in points if p.rev == head)}
    base = next(p for p in points if p.rev == head)
    assert (base.student_layers, base.int8_base, base.int8_per_channel, base.max_length) == (2, "fused", False, 48)
    assert (base.serve_f1, base.p50_ms, base.size_mb, base.variant) == (0.64, 3.0, 8.0, "student_int8_d2")
    deep = by_name["deep"]
    assert (deep.student_layers, deep.int8_base, deep.variant, deep.p50_ms) == (4, "plain", "student_int8_d4", 4.5)
    assert skipped == ["waiting: queued"]  # queued, never run: no figures yet
    assert base.pareto and deep.pareto  # deep is more accurate, the baseline faster and smaller


def test_sweep_report_writes_plot_and_table_and_picks(fake_repo, tmp_path):
    import matplotlib.image

    rep = sweep_report(fake_repo, tmp_path / "pareto.png", tmp_path / "sweep.md", budget_ms=3.5)
    assert rep.pick.point is not None and rep.pick.point.student_layers == 2  # deep's 4.5 ms is over budget
    assert matplotlib.image.imread(tmp_path / "pareto.png").shape[1] > 600
    table = (tmp_path / "sweep.md").read_text()
    assert "| deep " in table and "student_int8_d4" in table and "p50 <= 3.5 ms" in table
    with pytest.raises(ReportError, match="no run in `dvc exp show` has the optimize headline"):
        sweep_points([{"rev": "workspace", "data": {"metrics": {}}, "error": None, "experiments": None}])


# ----------------------------------------------------------------- a real queue on the tiny pipeline
def _wait_for_queue(proj: Path, timeout_s: float = 540) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = sh(["dvc", "queue", "status"], proj)
        if not any(s in status for s in ("Queued", "Running")):
            return status
        time.sleep(2)
    pytest.fail(f"the DVC queue did not finish in {timeout_s:.0f} s:\n{status}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_queued_depth_sweep_of_the_tiny_pipeline_is_reported(tmp_path):
    proj = copy_project(tmp_path / "proj")
    (proj / "params.yaml").write_text((REPO / "tests/params_tiny.yaml").read_text())
    sh(["dvc", "repro", "finetune"], proj)  # the teacher, once: the queued runs take it from the DVC cache
    sh(["git", "add", "-A"], proj)
    sh(["git", *GIT_ID, "commit", "-qm", "tiny teacher"], proj)
    # Only what the depth changes (the student) besides the fp32 fallback, and a shorter distillation: a quick queue.
    quick = ["-S", "optimize.variants=[onnx_fp32,student_int8]", "-S", "optimize.distill_steps=5"]
    for depth in (1, 2):
        sh(["dvc", "exp", "run", "--queue", "optimize", "-n", f"depth{depth}", "-S", f"optimize.student_layers={depth}",
            *quick], proj)  # fmt: skip
    sh(["dvc", "queue", "start", "-j", "2"], proj)
    try:
        status = _wait_for_queue(proj)
    finally:  # no worker outlives the test, even a failed one
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=proj, env=run_env(), capture_output=True, timeout=60)
    assert status.count("Success") == 2, status
    out = sh(["kit", "sweep", "report", "--latency-budget-ms", "1000"], proj)
    points = {p.name: p for p in sweep_points(exp_show(proj), cwd=proj)[0]}
    assert {"depth1", "depth2"} <= set(points) and all(points[n].variant for n in ("depth1", "depth2"))
    for depth in (1, 2):  # the count reached the distillation: the first `depth` of the tiny teacher's 2 layers
        bench = json.loads(sh(["git", "show", f"{points[f'depth{depth}'].rev}:reports/bench.json"], proj))
        assert bench["distill"]["layers"] == list(range(depth)) and points[f"depth{depth}"].student_layers == depth
    table = (proj / "reports/sweep.md").read_text()
    assert "| depth1 " in table and "| depth2 " in table and "| depth1 " in out and "pick: p50 <= 1000 ms" in out
    assert (proj / "reports/plots/sweep_pareto.png").stat().st_size > 10_000
