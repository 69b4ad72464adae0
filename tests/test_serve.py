"""Tests of kit.serve.app, kit.serve.batcher and kit.serve.telemetry: answers equal plain ONNX Runtime, micro-batching, limits and
hostile input against a real `kit serve` process, graceful SIGTERM, metrics, tracing, and a torch-free import chain."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kit.core.errors import ModelDirError
from kit.serve.app import create_app
from kit.serve.batcher import MicroBatcher
from kit.serve.model import read_model_dir
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

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_serving_dir(tmp_path_factory.mktemp("serving") / "model", max_length=64)


@pytest.fixture(scope="session")
def ref(serving_dir: Path) -> Reference:
    return Reference(serving_dir, max_length=64)


def _metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Flatten a Prometheus exposition into {(sample name, sorted labels): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


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
def _hostile_requests(rng: random.Random, max_texts: int, max_chars: int, max_body: int) -> list[tuple]:
    """(label, method, path, headers, body) of requests a server must refuse with a 4xx."""
    j = JSON
    dump = lambda obj: json.dumps(obj).encode()  # noqa: E731
    word = lambda: "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 20)))  # noqa: E731
    base = [
        ("bad json", j, b'{"texts": ['), ("bad json", j, b"not json"), ("bad json", j, b"{texts: []}"),
        ("bad json", j, b"{'texts': ['a']}"), ("bad json", j, b'{"texts": ["a"]}}'),
        ("bad json", j, b'{"texts":["a"],}'), ("bad json", j, b"NaN"), ("bom", j, '\ufeff{"texts":["a"]}'.encode()),
        ("raw nul in string", j, b'{"texts":["a\x00b"]}'),
        ("deep nesting", j, b"[" * 40_000), ("deep nesting", j, b'{"texts":' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
        ("huge int", j, b'{"texts":[' + b"9" * 5000 + b"]}"), ("huge float", j, b'{"texts":[1e99999]}'),
        ("missing body", j, b""), ("blank body", j, b"   \n"),
        ("invalid utf8", j, b'{"texts":["\xff\xfe"]}'), ("invalid utf8", j, b'{"texts":["\xc0\xaf"]}'),
        ("invalid utf8", j, b'{"texts":["\xe2\x82"]}'), ("invalid utf8", j, b'{"texts":["\xed\xa0\x80"]}'),
        ("lone surrogate", j, b'{"texts":["\\ud800"]}'), ("lone surrogate", j, b'{"texts":["ok","x\\udfffy"]}'),
        ("empty list", j, b'{"texts":[]}'), ("missing key", j, b"{}"), ("wrong key", j, b'{"text":["a"]}'),
        ("extra key", j, b'{"texts":["a"],"model":"x"}'),
        ("content type", {"content-type": "text/plain"}, b'{"texts":["a"]}'), ("content type", {}, b'{"texts":["a"]}'),
        ("content type", {"content-type": "application/x-www-form-urlencoded"}, b"texts=a"),
        ("content type", {"content-type": "multipart/form-data; boundary=x"}, b"--x--"),
        ("content type", {"content-type": "application/json; charset=latin-1"}, b'{"texts":["a"]}'),
        ("content type", {"content-type": "application/xml"}, b"<texts/>"),
        ("too many texts", j, dump({"texts": ["a"] * (max_texts + 1)})),
        ("too many texts", j, dump({"texts": [""] * 10_000})),
        ("too long text", j, dump({"texts": ["ok", "x" * (max_chars + 1)]})),
        ("too long text", j, dump({"texts": ["\U0001f600" * (max_chars + 1)]})),
        ("too large body", j, dump({"texts": ["y" * (max_body + 10)]})),
        ("too large body", j, dump({"texts": ["z" * 100] * (max_body // 50)})),
    ]  # fmt: skip
    for v in (1, 1.5, "a", None, True, {}, {"a": 1}):
        base.append(("texts type", j, dump({"texts": v})))
    for v in (1, 1.5, None, True, {}, {"a": 1}, ["nested"], [["deeper"]]):
        base.append(("item type", j, dump({"texts": ["fine", v]})))
    for v in ([], [{"texts": ["a"]}], "texts", 42, None, True):
        base.append(("top-level type", j, dump(v)))
    reqs = [(label, "POST", "/predict", h, b) for label, h, b in base]
    reqs += [("method", m, "/predict", j, b'{"texts":["a"]}') for m in ("GET", "PUT", "DELETE", "PATCH")]
    paths = ("/", "/predict/", "/predictx", "/%00", "/" + "a" * 3000)
    reqs += [("path", "POST", p, j, b'{"texts":["a"]}') for p in paths]
    # Mutations: random truncation and byte flips of a valid body, random JSON values, random junk.
    valid = dump({"texts": [word() for _ in range(3)]})
    for _ in range(120):
        k = rng.randint(1, len(valid) - 1)
        reqs.append(("truncated", "POST", "/predict", j, valid[:k]))
    for _ in range(60):
        b = bytearray(valid)
        for _ in range(3):
            b[rng.randrange(len(b))] = rng.choice(b'\x00\xff{}[]",:\\')
        reqs.append(("flipped", "POST", "/predict", j, bytes(b)))
    for _ in range(60):
        reqs.append(("junk", "POST", "/predict", j, bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))))
    return reqs


def _is_refusal_or_valid(status: int, body: bytes) -> bool:
    """A mutated body may still be valid JSON with texts; then 200 is right. Any 4xx must carry a JSON error."""
    if status == 200:
        return True
    return 400 <= status < 500 and isinstance(json.loads(body).get("error"), str)


@pytest.mark.timeout(150)
def test_hostile_requests_never_5xx_and_valid_answers_stay_right(serving_dir: Path, ref: Reference, tmp_path: Path):
    limits = dict(max_texts_per_request=64, max_chars_per_text=500, max_body_bytes=65536)
    srv = ServerProcess(serving_dir, tmp_path, max_batch_size=16, max_delay_ms=2, **limits)
    rng = random.Random(0)
    try:
        srv.wait_ready()
        hostile = _hostile_requests(rng, 64, 500, 65536)
        rng.shuffle(hostile)
        n_sent = n_valid = 0
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            for i, (label, method, path, headers, body) in enumerate(hostile):
                r = client.request(method, path, headers=headers, content=body)
                n_sent += 1
                assert r.status_code < 500, (label, body[:100], r.status_code, r.text)
                assert _is_refusal_or_valid(r.status_code, r.content), (label, body[:100], r.status_code, r.text)
                if label not in ("truncated", "flipped", "junk"):
                    assert r.status_code >= 400, (label, body[:100], r.text)
                if i % 8 == 0:  # valid traffic in between, including NUL bytes, emoji and the length limit
                    texts = [rng.choice(SAMPLE_TEXTS) + " \x00 " + "🙂" * rng.randint(0, 5), "a" * 500, f"n{i}"]
                    ok = client.post("/predict", json={"texts": texts})
                    assert ok.status_code == 200, ok.text
                    assert_matches(ok.json()["predictions"], ref, texts)
                    n_valid += 1
            # A body streamed in chunks (no Content-Length) is cut off at the limit too.
            chunks = (b'{"texts":["' + b"q" * 8192 for _ in range(20))
            r = client.post("/predict", headers=JSON, content=chunks)
            assert r.status_code == 413, r.text
            assert r.json()["error"].startswith("body is more than")
            # Specific messages say what is wrong.
            r = client.post("/predict", json={"texts": ["ok"] * 3 + ["x" * 501]})
            assert r.json() == {"error": "texts[3]: longer than 500 characters (501)"}
            r = client.post("/predict", json={"texts": ["a", 7]})
            assert r.status_code == 422 and r.json() == {"error": "texts[1]: must be a string, got number"}
        assert n_sent >= 300 and n_valid >= 30

        # Concurrent mix: bad requests in flight beside good ones (they share batches' timing, never their fate).
        async def mixed():
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                good = [[f"good {k}", rng.choice(SAMPLE_TEXTS)] for k in range(40)]
                bad = [b[4] for b in hostile[:40]]
                tasks = [c.post("/predict", json={"texts": t}) for t in good]
                tasks += [c.post("/predict", headers=JSON, content=b) for b in bad]
                res = await asyncio.gather(*tasks)
                return good, res[:40], res[40:]

        good, good_res, bad_res = asyncio.run(mixed())
        for texts, r in zip(good, good_res):
            assert r.status_code == 200
            assert_matches(r.json()["predictions"], ref, texts)
        assert all(r.status_code < 500 for r in bad_res)

        # Broken HTTP at the socket level: the server answers or closes, and stays up.
        for raw in (b"GARBAGE\r\n\r\n", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{",  # then hang up mid-body
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"h" * 70_000 + b"\r\n\r\n"):  # fmt: skip
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(raw)
                s.shutdown(socket.SHUT_WR)
                try:
                    reply = s.recv(100)
                except (ConnectionResetError, TimeoutError):
                    reply = b""
                assert not reply.startswith(b"HTTP/1.1 5"), reply
        assert httpx.get(srv.url + "/healthz").json() == {"status": "alive"}
        assert httpx.get(srv.url + "/readyz").status_code == 200
        final = _metrics(httpx.get(srv.url + "/metrics").text)
        fives = [k for k in final if k[0] == "kit_serve_requests_total" and dict(k[1])["status"][0] == "5"]
        assert all(dict(k[1])["route"] == "/readyz" for k in fives), fives  # 503 while loading is by design
    finally:
        code = srv.terminate()
    out = srv.output()
    assert code == 0, out
    assert "Traceback" not in out, out[-3000:]
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(access) >= n_sent + n_valid
    assert set(access[0]) == {"ts", "method", "path", "status", "duration_ms", "n_texts"}
    assert sum(a["n_texts"] for a in access if a["status"] == 200 and a["path"] == "/predict") >= 3 * n_valid


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
