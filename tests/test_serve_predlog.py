"""The prediction log written by the real server: one record per text with request ids, the served model's labels,
features and pooled embeddings (from the serving graph itself), counted on /metrics; request ids; span attributes."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from kit.core.errors import ModelDirError
from kit.core.params import PredictionLogParams, ServeParams
from kit.monitor.predlog_read import read_prediction_log
from kit.serve.app import create_app
from kit.serve.model import OnnxTextClassifier, read_model_dir
from kit.serve.pooled import pooled_output_name
from kit.serve.predlog import LogSettings, PredictionLogError, decode_embeddings, encode_embedding
from kit.serve.predrecord import encode_embeddings
from kit.serve.textfeatures import load_feature_tokenizer, text_features
from tests.fixtures_serve import SAMPLE_TEXTS, ServerProcess, build_tiny_serving_dir, in_process, serve_params

HIDDEN = 32  # the tiny fixture BERT's hidden size


@pytest.fixture(scope="module")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_serving_dir(tmp_path_factory.mktemp("serving") / "model", max_length=64)


def _closed_lines(log_dir: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(log_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]


# ------------------------------------------------------------------------------------------ real `kit serve` process
@pytest.mark.timeout(120)
def test_kit_serve_logs_one_record_per_text_with_the_served_answers(serving_dir: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"  # absolute: the server's working directory is the repo
    srv = ServerProcess(serving_dir, tmp_path, max_batch_size=8, max_delay_ms=2,
                        prediction_log={"enabled": True, "dir": str(log_dir), "max_records": 7})  # fmt: skip
    sent: dict[str, tuple[str, dict]] = {}  # record id -> (text, prediction)
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            for i, text in enumerate(SAMPLE_TEXTS):  # single texts, the client naming each request
                r = client.post("/predict", json={"texts": [text]}, headers={"x-request-id": f"req:{i}.a_b-c"})
                assert r.status_code == 200 and r.headers["x-request-id"] == f"req:{i}.a_b-c"
                sent[f"req:{i}.a_b-c"] = (text, r.json()["predictions"][0])
            for k in range(3):  # several texts, the server naming the request
                texts = SAMPLE_TEXTS[k : k + 5] + [f"extra text {k} " * k]
                r = client.post("/predict", json={"texts": texts})
                rid = r.headers["x-request-id"]
                assert r.status_code == 200 and len(rid) == 32 and rid not in sent
                sent |= {f"{rid}-{j}": (t, p) for j, (t, p) in enumerate(zip(texts, r.json()["predictions"]))}
            bad = client.post("/predict", json={"texts": ["a"]}, headers={"x-request-id": "no spaces allowed"})
            assert bad.status_code == 422 and "x-request-id" in bad.json()["error"]
    finally:
        code = srv.terminate()
    assert code == 0, srv.output()
    assert not list(log_dir.glob(".*"))  # shutdown flushed and closed every file

    lines = _closed_lines(log_dir)
    assert len(lines) == len(sent) and len(list(log_dir.glob("*.jsonl"))) == -(-len(sent) // 7)
    assert all("text" not in line for line in lines)  # serve.prediction_log.log_text is off
    frame = read_prediction_log(log_dir).frame.set_index("request_id")
    assert sorted(frame.index) == sorted(sent) and (frame["model_version"] == "test-0.1").all()
    ids = list(sent)
    texts = [sent[i][0] for i in ids]
    feats = text_features(load_feature_tokenizer(serving_dir), texts)
    for rid, f in zip(ids, feats, strict=True):
        row, pred = frame.loc[rid], sent[rid][1]
        assert row["label"] == pred["label"] and row["confidence"] == pytest.approx(pred["score"], abs=1e-6)
        assert (row["length_tokens"], row["unk_rate"], row["subword_rate"]) == (
            f.length_tokens, f.unk_rate, f.subword_rate)  # fmt: skip
        assert row["text_hash"] == f.text_hash and row["length_chars"] == len(sent[rid][0])
        assert row["latency_ms"] > 0
    got = decode_embeddings(frame.loc[ids, "embedding"].tolist())
    _, want, _ = OnnxTextClassifier(read_model_dir(serving_dir, 64), 1, pooled=True).predict(texts)
    assert got is not None and want is not None and got.shape == (len(ids), HIDDEN)
    np.testing.assert_allclose(got, want, atol=1e-3)  # float16 in the log


# ------------------------------------------------------------------------------------------------- in-process app
def test_raw_text_only_when_allowed_and_metrics_count_records(serving_dir: Path, tmp_path: Path) -> None:
    plog = {"enabled": True, "dir": str(tmp_path / "logs"), "log_text": True, "embeddings": False}
    app = create_app(serving_dir, serve_params(prediction_log=plog))
    texts = ["hello world", "émoji 🙂", "x"]

    async def traffic(client: httpx.AsyncClient):
        r = await client.post("/predict", json={"texts": texts}, headers={"x-request-id": "abc"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "abc"
        for _ in range(200):  # the writer thread writes within its flush interval
            metrics = (await client.get("/metrics")).text
            if 'kit_prediction_log_records_total{outcome="written"} 3.0' in metrics:
                return metrics
            await asyncio.sleep(0.05)
        raise AssertionError(metrics)

    metrics = asyncio.run(in_process(app, traffic))
    assert 'kit_prediction_log_records_total{outcome="dropped"} 0.0' in metrics
    lines = sorted(_closed_lines(tmp_path / "logs"), key=lambda d: d["request_id"])
    assert [(d["request_id"], d["text"]) for d in lines] == [("abc-0", texts[0]), ("abc-1", texts[1]), ("abc-2", "x")]
    assert all("embedding" not in d for d in lines)  # serve.prediction_log.embeddings off
    # Compact UTF-8 lines (no escapes), each stamped when its request was answered: UTC, milliseconds.
    raw = b"".join(f.read_bytes() for f in (tmp_path / "logs").glob("*.jsonl"))
    assert "émoji 🙂".encode() in raw and b'": ' not in raw and raw.count(b"\n") == 3
    for d in lines:
        stamp = datetime.fromisoformat(d["time"])
        assert stamp.utcoffset() == timedelta(0) and len(d["time"].split(".")[1]) == len("123+00:00")
        assert abs((datetime.now(UTC) - stamp).total_seconds()) < 120


def test_request_ids_are_validated_and_echoed(serving_dir: Path, tmp_path: Path) -> None:
    app = create_app(serving_dir, serve_params())

    async def traffic(client: httpx.AsyncClient):
        out = {}
        for name, rid in [("long", "a" * 129), ("slash", "a/b"), ("empty", ""), ("quote", 'a"b')]:
            out[name] = await client.post("/predict", json={"texts": ["a"]}, headers={"x-request-id": rid})
        out["max"] = await client.post("/predict", json={"texts": ["a"]}, headers={"x-request-id": "Z" * 128})
        out["bad body"] = await client.post("/predict", json={"texts": []}, headers={"x-request-id": "k1"})
        return out

    res = asyncio.run(in_process(app, traffic))
    for name in ("long", "slash", "empty", "quote"):
        assert res[name].status_code == 422, name
        assert res[name].json()["error"].startswith("x-request-id header: must be 1-128 characters")
    assert res["max"].status_code == 200 and res["max"].headers["x-request-id"] == "Z" * 128
    assert res["bad body"].status_code == 422 and res["bad body"].headers["x-request-id"] == "k1"


def test_logging_off_creates_no_dir_and_no_writer(serving_dir: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    app = create_app(serving_dir, serve_params(prediction_log={"enabled": False, "dir": str(log_dir)}))

    async def traffic(client: httpx.AsyncClient):
        assert (await client.post("/predict", json={"texts": ["a", "b"]})).status_code == 200
        return [t.name for t in threading.enumerate()], app.state.kit.recorder

    threads, recorder = asyncio.run(in_process(app, traffic))
    assert "prediction-log" not in threads and recorder is None and not log_dir.exists()
    assert ServeParams().prediction_log.enabled is False


def test_predict_span_names_model_and_micro_batch(serving_dir: Path) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    # A fixed 1 s wait and batches of 2: two concurrent one-text requests always share a batch, and run as soon as
    # they fill it; a lone 3-text request runs as 2 + 1.
    params = serve_params(otel_enabled=True, max_batch_size=2, max_delay_ms=1000, batch_wait="fixed")
    app = create_app(serving_dir, params, span_processor=SimpleSpanProcessor(exporter))

    async def traffic(client: httpx.AsyncClient):
        exporter.clear()
        pair = await asyncio.gather(*(client.post("/predict", json={"texts": [t]}) for t in SAMPLE_TEXTS[:2]))
        lone = await client.post("/predict", json={"texts": SAMPLE_TEXTS[2:5]})
        assert all(r.status_code == 200 for r in [*pair, lone])

    asyncio.run(in_process(app, traffic))
    spans = sorted((s for s in exporter.get_finished_spans() if s.name == "kit.predict"), key=lambda s: s.start_time)
    assert [(s.attributes["kit.n_texts"], s.attributes["kit.batch_size"]) for s in spans] == [(1, 2), (1, 2), (3, 2)]
    for s in spans:
        assert s.attributes["kit.model_version"] == "test-0.1" and s.attributes["kit.model_variant"] == "onnx_fp32"


# ----------------------------------------------------------------------------------------------- pooled embeddings
def test_pooled_output_is_the_pooler_and_leaves_the_logits_unchanged(serving_dir: Path) -> None:
    assert pooled_output_name(serving_dir / "model.onnx") == "/bert/pooler/activation/Tanh_output_0"
    meta = read_model_dir(serving_dir, 64)
    plain, pooled = OnnxTextClassifier(meta, 1), OnnxTextClassifier(meta, 1, pooled=True)
    probs, none, no_counts = plain.predict(SAMPLE_TEXTS)
    probs2, emb, _ = pooled.predict(SAMPLE_TEXTS)
    assert (
        none is None
        and no_counts is None
        and emb is not None
        and emb.shape == (len(SAMPLE_TEXTS), HIDDEN)
        and emb.dtype == np.float32
    )
    np.testing.assert_array_equal(probs, probs2)
    np.testing.assert_array_equal(probs, pooled.predict_proba(SAMPLE_TEXTS))
    assert np.abs(emb).max() <= 1.0  # a tanh


def test_a_graph_without_a_pooler_is_refused_by_name(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # logits = Relu(x) @ W: no Tanh on the way back from the logits (the one Tanh feeds nothing the head reads).
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], np.ones(12, dtype=np.float32).tolist())
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("MatMul", ["h", "W"], ["logits"]),
             helper.make_node("Tanh", ["x"], ["side"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("side", TensorProto.FLOAT, ["batch", 4])], [w],
    )  # fmt: skip
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelDirError, match=f"{path}: no pooled embedding"):
        pooled_output_name(path)
    nodes[0] = helper.make_node("Tanh", ["x"], ["h"])  # now the head reads a Tanh: that is the pooled tensor
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.save(helper.make_model(graph), str(path))
    assert pooled_output_name(path) == "h"


# ---------------------------------------------------------------------------------------- embedding codec, settings
def test_embeddings_round_trip_as_float16_and_bad_values_name_their_row() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.uniform(-1, 1, size=(5, 384)).astype(np.float32)
    encoded = [encode_embedding(v) for v in vecs]
    assert encode_embeddings(list(vecs)) == encoded  # the writer's batch form
    assert all(len(e) == 1024 for e in encoded)  # 384 float16 values: 768 bytes, 1024 base64 characters
    back = decode_embeddings(encoded)
    assert back is not None and back.dtype == np.float32 and back.shape == (5, 384)
    np.testing.assert_allclose(back, vecs, atol=5e-4)
    assert decode_embeddings([None, float("nan")]) is None and decode_embeddings([]) is None
    mixed = decode_embeddings([None, encoded[0]])
    assert mixed is not None and np.isnan(mixed[0]).all() and np.allclose(mixed[1], back[0])
    with pytest.raises(PredictionLogError, match="row 2: not valid base64"):
        decode_embeddings([encoded[0], None, "not base64!"])
    with pytest.raises(PredictionLogError, match="row 1: dimension 2, but row 0 has 384"):
        decode_embeddings([encoded[0], encode_embedding(np.zeros(2))])
    with pytest.raises(PredictionLogError, match="row 0: 3 bytes"):
        decode_embeddings(["AAAA"])
    with pytest.raises(PredictionLogError, match="row 0: expected base64 text, got int"):
        decode_embeddings([7])


def test_log_settings_from_params(tmp_path: Path) -> None:
    p = PredictionLogParams(enabled=True, log_text=True, max_records=5, max_bytes=4096, max_age_s=1.5, queue_size=9)
    s = LogSettings.from_params(p, tmp_path)
    assert s.directory == tmp_path / "logs" / "predictions" and s.log_text
    assert (s.max_records, s.max_bytes, s.max_age_s, s.queue_size) == (5, 4096, 1.5, 9)
    assert LogSettings.from_params(PredictionLogParams(dir=str(tmp_path / "abs")), Path("/x")).directory == (
        tmp_path / "abs")  # fmt: skip


def test_pooled_without_the_onnx_package_says_what_to_do(serving_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError, as in the serving image
    with pytest.raises(ModelDirError, match=r"needs the `onnx` package .*serve.prediction_log.embeddings to false"):
        OnnxTextClassifier(read_model_dir(serving_dir, 64), 1, pooled=True)


def test_a_serving_graph_that_declares_pooled_needs_no_onnx_package(
    serving_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import sys

    import onnx

    from kit.serve.pooled import add_named_pooled_output

    d = tmp_path / "serving"
    shutil.copytree(serving_dir, d)
    model = onnx.load(str(d / "model.onnx"))
    assert add_named_pooled_output(model, d / "model.onnx")  # as the optimize stage writes the serving graph
    onnx.save(model, str(d / "model.onnx"))
    expected = OnnxTextClassifier(read_model_dir(serving_dir, 64), 1, pooled=True).predict(SAMPLE_TEXTS)
    monkeypatch.setitem(sys.modules, "onnx", None)  # the serving image has no onnx
    clf = OnnxTextClassifier(read_model_dir(d, 64), 1, pooled=True)
    assert clf.pooled_name == "pooled"
    probs, emb, _ = clf.predict(SAMPLE_TEXTS)
    np.testing.assert_array_equal(probs, expected[0])
    np.testing.assert_array_equal(emb, expected[1])
