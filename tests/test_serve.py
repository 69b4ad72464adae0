"""Tests of kit.serve.app, kit.serve.batcher and kit.serve.telemetry: answers equal plain ONNX Runtime, micro-batching, limits and
hostile input against a real `kit serve` process, graceful SIGTERM, metrics, tracing, and a torch-free import chain."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from kit.core.errors import ModelDirError
from kit.serve.app import create_app
from kit.serve.batcher import MicroBatcher
from kit.serve.model import read_model_dir
from tests.fixtures_hostile import JSON, run_hostile
from tests.fixtures_hostile import parse_metrics as _metrics
from tests.fixtures_serve import (
    LABELS,
    ROOT,
    SAMPLE_TEXTS,
    Reference,
    ServerProcess,
    assert_matches,
    build_tiny_serving_dir,
    in_process,
    serve_params,
)


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_serving_dir(tmp_path_factory.mktemp("serving") / "model", max_length=64)


@pytest.fixture(scope="session")
def ref(serving_dir: Path) -> Reference:
    return Reference(serving_dir, max_length=64)


# ------------------------------------------------------------------------------------------------ light import chain
def test_import_chain_of_kit_serve_has_no_torch_or_transformers(serving_dir: Path) -> None:
    # A fresh interpreter: this test process has torch loaded by the fixture.
    code = textwrap.dedent(f"""
        import sys
        import kit.cli, kit.core.params, kit.serve.app
        from kit.core.params import ServeParams
        from kit.serve.model import OnnxTextClassifier, read_model_dir
        app = kit.serve.app.create_app({str(serving_dir)!r}, ServeParams())
        OnnxTextClassifier(read_model_dir({str(serving_dir)!r}, 64), 1).predict_proba(["hello"])
        import uvicorn
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "onnx", "pandas",
                       "sklearn", "matplotlib") or m.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation")))
        print(heavy)
        assert not heavy, heavy
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------------------------------------------ model dir
def test_model_dir_optional_files_and_errors(serving_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(serving_dir, d)
    meta = read_model_dir(d, 99)
    assert (meta.variant, meta.version, meta.max_length, meta.labels) == ("onnx_fp32", "test-0.1", 64, LABELS)
    (d / "selection.json").unlink()
    (d / "serving.json").unlink()
    meta = read_model_dir(d, 99)
    assert (meta.variant, meta.version, meta.max_length) == ("unknown", "unknown", 99)
    (d / "labels.json").write_text('{"labels": ["a"]}')
    with pytest.raises(ModelDirError, match="labels.json"):
        read_model_dir(d, 64)
    (d / "model.onnx").unlink()
    with pytest.raises(ModelDirError, match="missing model.onnx"):
        read_model_dir(d, 64)
    with pytest.raises(ModelDirError, match="not found"):
        read_model_dir(tmp_path / "nope", 64)


def test_cli_refuses_unusable_model_dirs(serving_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "kit.serve", str(tmp_path / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "model dir not found" in out.stderr
    bad = tmp_path / "bad"
    shutil.copytree(serving_dir, bad)
    (bad / "model.onnx").write_bytes(b"not an onnx graph")
    srv = ServerProcess(bad, tmp_path)
    assert srv.proc.wait(60) == 1  # the port bound, the model failed to load: the process must not linger unready
    assert "cannot load ONNX model" in srv.output()


# ------------------------------------------------------------------------------------------------- in-process API
def test_predict_matches_plain_onnxruntime_and_readyz_lifecycle(serving_dir: Path, ref: Reference) -> None:
    from fastapi.testclient import TestClient

    app = create_app(serving_dir, serve_params())
    texts = SAMPLE_TEXTS[:6] + ["", "nul \x00 byte", "émoji 🙂🙃 RTL \u05e9\u05dc\u05d5\u05dd", "long " * 400]
    assert TestClient(app).get("/readyz").status_code == 503  # no lifespan yet: not loaded
    with TestClient(app) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/readyz").json()["model_version"] == "test-0.1"
        assert client.get("/healthz").json() == {"status": "alive"}
        r = client.post("/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == "test-0.1" and body["model_variant"] == "onnx_fp32"
        assert_matches(body["predictions"], ref, texts)
        for p in body["predictions"]:
            assert p["score"] == max(p["probs"].values()) and abs(sum(p["probs"].values()) - 1) < 1e-5
        app.state.kit.begin_drain()
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "draining"


def test_ort_spinning_reaches_the_servers_session(serving_dir: Path, ref: Reference, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    import kit.serve.app as app_module
    from kit.serve.model import OnnxTextClassifier

    seen: list[str] = []

    class Spy(OnnxTextClassifier):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            options = self.session.get_session_options()
            seen.append(options.get_session_config_entry("session.intra_op.allow_spinning"))

    monkeypatch.setattr(app_module, "OnnxTextClassifier", Spy)
    for spinning in (False, True):
        with TestClient(create_app(serving_dir, serve_params(ort_spinning=spinning))) as client:
            for _ in range(600):
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.05)
            r = client.post("/predict", json={"texts": SAMPLE_TEXTS[:4]})
            assert r.status_code == 200, r.text
            assert_matches(r.json()["predictions"], ref, SAMPLE_TEXTS[:4])
    assert seen == ["0", "1"]


def test_model_that_fails_to_load_answers_503_not_hang(serving_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    bad = tmp_path / "bad"
    shutil.copytree(serving_dir, bad)
    (bad / "model.onnx").write_bytes(b"garbage")
    with TestClient(create_app(bad, serve_params())) as client:
        for _ in range(200):
            r = client.get("/readyz")
            if r.json()["status"] == "failed":
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "cannot load ONNX model" in r.json()["error"]
        r = client.post("/predict", json={"texts": ["a"]})
        assert r.status_code == 503 and "cannot load ONNX model" in r.json()["error"]


def test_micro_batching_groups_concurrent_requests_with_unchanged_results(serving_dir: Path, ref: Reference) -> None:
    app = create_app(serving_dir, serve_params(max_batch_size=16, max_delay_ms=50))
    rng = random.Random(1)
    texts = [f"{rng.choice(SAMPLE_TEXTS)} #{i} " + "word " * rng.randint(0, 40) for i in range(24)]
    big = [f"text {i} " * (i % 7 + 1) for i in range(40)]  # more than one batch: split, answered in order

    async def traffic(client: httpx.AsyncClient):
        singles = await asyncio.gather(*(client.post("/predict", json={"texts": [t]}) for t in texts))
        large = await client.post("/predict", json={"texts": big})
        return singles, large, (await client.get("/metrics")).text

    singles, large, metrics_text = asyncio.run(in_process(app, traffic))
    assert all(r.status_code == 200 for r in singles)
    assert_matches([r.json()["predictions"][0] for r in singles], ref, texts)
    assert large.status_code == 200
    assert_matches(large.json()["predictions"], ref, big)
    m = _metrics(metrics_text)
    n_batches, n_texts = m[("kit_serve_batch_size_count", ())], m[("kit_serve_batch_size_sum", ())]
    assert n_texts == len(texts) + len(big)
    assert n_batches < len(texts)  # concurrent single-text requests shared model runs
    assert m[("kit_serve_batch_size_bucket", (("le", "1.0"),))] < n_batches  # some batch held more than one text
    assert m[("kit_serve_batch_size_bucket", (("le", "16.0"),))] == n_batches  # never above max_batch_size


def test_batcher_isolates_a_request_that_breaks_its_batch() -> None:
    def predict(texts: list[str]) -> np.ndarray:
        if any("BOOM" in t for t in texts):
            raise ValueError("cannot handle BOOM")
        return np.array([[len(t), 0.0] for t in texts])

    sizes: list[int] = []

    async def main():
        b = MicroBatcher(max_batch_size=8, max_delay_s=0.05, on_batch=lambda n, s: sizes.append(n))
        b.start(predict)
        res = await asyncio.gather(b.submit(["a"]), b.submit(["BOOM", "bb"]), b.submit(["ccc", "dddd"]),
                                   return_exceptions=True)  # fmt: skip
        await b.close()
        return res

    ok1, bad, ok2 = asyncio.run(main())
    assert isinstance(bad, ValueError)
    assert ok1[:, 0].tolist() == [1] and ok2[:, 0].tolist() == [3, 4]
    assert sizes == [1, 2]  # the failed 5-text batch was rerun per request; only the good ones count


def test_metrics_move_by_the_traffic_sent(serving_dir: Path) -> None:
    app = create_app(serving_dir, serve_params(max_delay_ms=0))
    sizes = [1, 2, 3, 1, 3]

    async def traffic(client: httpx.AsyncClient):
        before = _metrics((await client.get("/metrics")).text)
        answers = []
        for i, n in enumerate(sizes):
            answers.append((await client.post("/predict", json={"texts": SAMPLE_TEXTS[i : i + n]})).json())
        for bad in ({"texts": []}, {"texts": [1]}):
            assert (await client.post("/predict", json=bad)).status_code == 422
        assert (await client.post("/predict", content=b"x", headers={"content-type": "text/plain"})).status_code == 415
        assert (await client.post("/predict", content=b"{", headers=JSON)).status_code == 400
        assert (await client.get("/no/such/path")).status_code == 404
        for _ in range(2):
            await client.get("/healthz")
        return before, answers, _metrics((await client.get("/metrics")).text)

    before, answers, m = asyncio.run(in_process(app, traffic))

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return m.get(key, 0.0) - before.get(key, 0.0)

    req = "kit_serve_requests_total"
    assert moved(req, route="/predict", method="POST", status="200") == 5
    assert moved(req, route="/predict", method="POST", status="422") == 2
    assert moved(req, route="/predict", method="POST", status="415") == 1
    assert moved(req, route="/predict", method="POST", status="400") == 1
    assert moved(req, route="other", method="GET", status="404") == 1
    assert moved(req, route="/healthz", method="GET", status="200") == 2
    assert moved("kit_serve_request_duration_seconds_count", route="/predict") == 9
    predicted = [p["label"] for a in answers for p in a["predictions"]]
    for label in LABELS:
        assert moved("kit_serve_predictions_total", label=label) == predicted.count(label)
    assert sum(moved("kit_serve_predictions_total", label=lab) for lab in LABELS) == sum(sizes)
    assert moved("kit_serve_confidence_count") == sum(sizes)
    # Sequential requests and max_delay_ms 0: one model run per request, of exactly its texts.
    assert moved("kit_serve_batch_size_count") == len(sizes) and moved("kit_serve_batch_size_sum") == sum(sizes)
    assert moved("kit_serve_batch_duration_seconds_count") == len(sizes)
    assert m[("kit_serve_queue_depth", ())] == 0 and m[("kit_serve_ready", ())] == 1
    info = [k for k in m if k[0] == "kit_serve_model_info"]
    assert len(info) == 1 and ("version", "test-0.1") in info[0][1] and ("variant", "onnx_fp32") in info[0][1]


def test_opentelemetry_span_per_request_when_enabled(serving_dir: Path) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    app = create_app(serving_dir, serve_params(otel_enabled=True), span_processor=SimpleSpanProcessor(exporter))

    async def traffic(client: httpx.AsyncClient):
        exporter.clear()  # readiness polls are excluded anyway; start from nothing
        for i in range(3):
            assert (await client.post("/predict", json={"texts": SAMPLE_TEXTS[i : i + 2]})).status_code == 200
        assert (await client.post("/predict", json={"texts": 5})).status_code == 422
        await client.get("/healthz")

    asyncio.run(in_process(app, traffic))
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(server) == 4 and all(s.attributes.get("http.route") == "/predict" for s in server)
    inner = [s for s in spans if s.name == "kit.predict"]
    assert len(inner) == 3 and all(s.attributes["kit.n_texts"] == 2 for s in inner)
    server_traces = {s.context.trace_id for s in server}
    assert {s.context.trace_id for s in inner} <= server_traces
    assert server[0].resource.attributes["service.name"] == "kit-serve"


# ------------------------------------------------------------------------------------ real server: hostile input
@pytest.mark.timeout(150)
def test_hostile_requests_never_5xx_and_valid_answers_stay_right(serving_dir: Path, ref: Reference, tmp_path: Path):
    limits = dict(max_texts_per_request=64, max_chars_per_text=500, max_body_bytes=65536)
    srv = ServerProcess(serving_dir, tmp_path, max_batch_size=16, max_delay_ms=2, **limits)
    try:
        srv.wait_ready()
        run = run_hostile(srv.url, serve_params(**limits), lambda preds, texts: assert_matches(preds, ref, texts))
    finally:
        code = srv.terminate()
    out = srv.output()
    assert code == 0, out
    assert "Traceback" not in out, out[-3000:]
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(access) >= run.n_sent + run.n_valid
    assert set(access[0]) == {"ts", "method", "path", "status", "duration_ms", "n_texts"}
    assert sum(a["n_texts"] for a in access if a["status"] == 200 and a["path"] == "/predict") >= 3 * run.n_valid


# -------------------------------------------------------------------------------------- real server: SIGTERM drain
@pytest.mark.timeout(120)
def test_sigterm_finishes_every_accepted_request_then_exits_0(serving_dir: Path, ref: Reference, tmp_path: Path):
    # Batches are held open 10 s (a fixed wait), so all 50 requests are queued (accepted, unanswered) when SIGTERM
    # arrives.
    srv = ServerProcess(serving_dir, tmp_path, max_batch_size=64, max_delay_ms=10_000, batch_wait="fixed")
    texts = [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} ({i})" for i in range(50)]

    async def scenario():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=srv.url, timeout=60, limits=limits) as client:
            tasks = [asyncio.create_task(client.post("/predict", json={"texts": [t]})) for t in texts]
            async with httpx.AsyncClient(base_url=srv.url, timeout=5) as probe:
                for _ in range(400):
                    m = _metrics((await probe.get("/metrics")).text)
                    if m[("kit_serve_queue_depth", ())] == len(texts):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"requests never all queued: {m[('kit_serve_queue_depth', ())]}")
            assert not any(t.done() for t in tasks)
            t0 = time.monotonic()
            srv.proc.send_signal(15)
            results = await asyncio.gather(*tasks)
            return results, time.monotonic() - t0

    try:
        srv.wait_ready()
        results, drain_s = asyncio.run(scenario())
        code = srv.proc.wait(30)
    finally:
        srv.terminate()
    out = srv.output()
    assert code == 0, out
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    assert_matches([r.json()["predictions"][0] for r in results], ref, texts)
    assert drain_s < 9, f"drain took {drain_s:.1f} s: held batches were not flushed on SIGTERM"
    assert "Shutting down" in out and "Traceback" not in out
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/healthz", timeout=2)
