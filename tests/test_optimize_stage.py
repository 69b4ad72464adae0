"""kit/optimize/stage.py: run_optimize on a throwaway project with the tiny model: serving dir, typed bench.json with
project-relative paths only, plots, and a user's own .onnx file left alone by the rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kit.core.layout import LAYOUT
from kit.core.params import load_params
from kit.core.reports import BenchReport, read_report
from kit.optimize.metadata import is_kit_onnx
from kit.optimize.stage import PLOTS, run_optimize
from kit.serve.model import OnnxTextClassifier, read_model_dir
from tests.fixtures_optimize import LABELS, TEXTS, make_splits, tiny_model  # noqa: F401

PARAMS = """\
model:
  source: tiny
  max_length: 32
optimize:
  variants: [onnx_fp32, onnx_int8, student_int8]
  student_layers: [0]
  distill_steps: 2
  distill_batch_size: 8
  distill_rows: 16
  parity_rows: 8
  batch_sizes: [1, 4]
  seq_lengths: [16]
  bench_warmup: 1
  bench_repeats: 2
  bench_rounds: 1
  bench_texts: 16
  eval_rows: 24
  threads: 1
"""


def _identity_onnx(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A valid ONNX model that is not the kit's (a user's file), optionally stamped with metadata."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "user",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


@pytest.fixture(scope="module")
def project(tiny_model, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("optimize_project")
    make_splits(root / LAYOUT.data_dir)
    shutil.copytree(tiny_model, root / LAYOUT.finetune_dir)
    (root / "params.yaml").write_text(PARAMS)
    onnx_dir = root / LAYOUT.onnx_dir
    onnx_dir.mkdir(parents=True)
    _identity_onnx(onnx_dir / "model.onnx")  # the user's: no kit metadata
    _identity_onnx(onnx_dir / "onnx_fp16.onnx", {"kit.kind": "fp16"})  # a variant an earlier run asked for
    user_bytes = (onnx_dir / "model.onnx").read_bytes()
    report = run_optimize(load_params(root / "params.yaml"), root)
    return root, report, user_bytes


def test_run_optimize_writes_serving_dir_report_and_plots(project):
    root, report, _ = project
    serving = root / LAYOUT.serving_dir
    assert sorted(p.name for p in serving.iterdir()) == [
        "labels.json",
        "model.onnx",
        "selection.json",
        "serving.json",
        "tokenizer.json",
    ]
    chosen = report.selection.variant
    assert chosen in {"onnx_fp32", "onnx_int8", "student_int8"}
    # The chosen variant's graph as is, plus its pooled embedding declared as a second output (the prediction log's).
    served, variant = onnx.load(str(serving / "model.onnx")), onnx.load(str(root / LAYOUT.onnx_dir / f"{chosen}.onnx"))
    assert [o.name for o in served.graph.output] == ["logits", "pooled"]
    assert [n.name for n in served.graph.node[-1:]] == ["kit_pooled_output"]
    del served.graph.node[-1], served.graph.output[-1]
    assert served.SerializeToString() == variant.SerializeToString()
    assert json.loads((serving / "serving.json").read_text())["pooled_output"] == "pooled"
    selection = json.loads((serving / "selection.json").read_text())
    assert selection["variant"] == chosen and selection["version"] == report.selection.version
    # The server loads what the stage wrote and answers with one probability row per text.
    probs = OnnxTextClassifier(read_model_dir(serving, 32), 1).predict_proba(TEXTS[:3])
    assert probs.shape == (3, len(LABELS))

    back = read_report(root / LAYOUT.bench_report, BenchReport)
    assert back == report and back.stage == "optimize"
    h = back.headline
    assert (h.variant, h.throughput_batch_size, h.latency_batch_size, h.seq_len) == (chosen, 4, 1, 16)
    assert h.throughput_ratio > 0 and h.latency_ratio > 0 and h.p50_latency_ms > 0
    assert [v["name"] for v in back.variants] == ["onnx_fp32", "onnx_int8", "student_int8"]
    assert set(back.accuracy) == {"pytorch_fp32", "onnx_fp32", "onnx_int8", "student_int8"}
    assert back.distill["layers"] == [0] and back.distill["steps"] == 2
    assert {c["variant"] for c in back.candidates} == {"onnx_fp32", "onnx_int8", "student_int8"}
    assert len(back.benchmark["results"]) == 4 * 2

    # Each step's seconds in the order they ran, and the whole run's (at least their sum).
    steps = [(t.name, t.seconds) for t in back.timings.steps]
    assert [n for n, _ in steps] == [
        "export", "distill", "student export", "load runners", "accuracy", "benchmark", "serving and report"
    ]
    assert all(t >= 0 for _, t in steps) and back.timings.total_s >= sum(t for _, t in steps) - 0.1
    # The teacher's logits on the 16 distillation rows are kept for the next run.
    cached = np.load(root / LAYOUT.teacher_logits_dir / "logits.npy")
    assert cached.shape == (16, len(LABELS)) and back.distill["teacher_logits_cached"] is False

    assert back.plots == {k: f"{LAYOUT.plots_dir}/{v}" for k, v in PLOTS.items()}
    for rel in back.plots.values():
        assert (root / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_json_holds_no_absolute_path(project):
    root, _, _ = project
    text = (root / LAYOUT.bench_report).read_text()
    strings = _strings(json.loads(text))
    assert "onnx/onnx_fp32.onnx" in " ".join(strings)  # paths are there, relative
    for spelling in {str(root), str(root.resolve())}:
        assert spelling not in text
    assert not [s for s in strings if s.startswith("/")]
    assert all(v["path"].startswith(f"{LAYOUT.onnx_dir}/") for v in json.loads(text)["variants"])


def test_rebuild_keeps_a_users_onnx_and_drops_the_kits_stale_ones(project):
    root, _, user_bytes = project
    onnx_dir = root / LAYOUT.onnx_dir
    assert (onnx_dir / "model.onnx").read_bytes() == user_bytes and not is_kit_onnx(onnx_dir / "model.onnx")
    assert not (onnx_dir / "onnx_fp16.onnx").exists()  # kit-made, and not asked for this run
    # This run's files (int8 is quantized from the fused graph, so that is built too) and the user's, nothing else.
    built = {f"{m}_{k}.onnx" for m in ("onnx", "student") for k in ("fp32", "optimized", "int8")}
    assert {p.name for p in onnx_dir.glob("*.onnx")} == built | {"model.onnx"}
    assert all(is_kit_onnx(onnx_dir / name) for name in built)
