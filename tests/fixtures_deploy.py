"""Test helpers for the deploy stage: one tiny serving model dir per test process (shared by test_k8s and
test_loadtest), a Parquet of texts, and a stand-in HTTP server with the model server's endpoints."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastapi import Request  # module level: FastAPI resolves the handler's (string) annotation from here

__all__ = ["tiny_serving_dir", "write_texts_parquet", "serve_report", "EchoServer", "FakeKubeAPI", "TEXTS"]

ROOT = Path(__file__).resolve().parents[1]
# What `kit deploy render` writes: namespace, online 6, serverless 1, batch 3, monitoring 4, training 4.
N_MANIFESTS = 19

TEXTS = [
    "I love this, best day ever!", "This is terrible and I hate it.", "The meeting is at 3pm.", "meh",
    "Not bad at all, quite good actually", "worst service I have ever had", "ok", "What time is it?",
    "so happy for you!!!", "I am furious about the delay", "The sky is blue.", "never again",
]  # fmt: skip


@functools.lru_cache(maxsize=1)
def tiny_serving_dir() -> Path:
    """A serving dir (model.onnx of a random 2-layer BERT, tokenizer, labels, selection, serving), built once."""
    from tests.fixtures_serve import build_tiny_serving_dir

    out = Path(tempfile.mkdtemp(prefix="kit-deploy-tiny-")) / "serving"
    return build_tiny_serving_dir(out)


def write_texts_parquet(path: Path, texts: list[str], column: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: texts, "label": ["neutral"] * len(texts)}), path)
    return path


def serve_report(
    *,
    rss_peak_mib: float | None = 300.0,
    cpu_peak_cores: float | None = 0.9,
    ready_s: float = 50.0,
    sustainable_concurrency: int | None = 16,
):  # -> kit.core.reports.ServeReport
    """A complete, small ServeReport (one level each way) whose sizing figures are the arguments."""
    from kit.core.reports import ServeReport

    level = {"concurrency": 4, "throughput_rps": 100.0, "p99_ms": 40.0, "errors": 0}
    bare_run = {"batch_size": 4, "throughput_rps": 110.0}
    return ServeReport(
        model={"dir": "models/serving", "variant": "onnx_int8", "version": "v1", "size_mib": 1.0, "max_length": 32},
        config={"serve": {"max_batch_size": 4, "max_delay_ms": 5.0, "batch_wait": "adaptive", "threads": 2},
                "concurrency_levels": [4], "nobatch_levels": [4], "duration_s": 1.0, "warmup_s": 0.2, "texts": 12,
                "texts_path": "data/test.parquet", "cpu_count": 2, "load_avg_1m_before": 0.5,
                "load_avg_1m_after": 0.6, "client": "closed loop"},
        ratio_concurrency=4, sustainable_concurrency=sustainable_concurrency, throughput_per_pod_rps=100.0,
        bare_throughput_rps=110.0, server_over_bare=0.909, p99_ms_at_ratio=40.0, p99_target_ms=100.0,
        best_throughput_rps=100.0, batching_over_nobatch=1.1, nobatch_over_bare_unbatched=0.8,
        targets={"p99_le_target_at_ratio": True},
        cold_start={"ready_s": ready_s, "first_request_ms": 12.0, "nobatch_ready_s": ready_s},
        resources={"rss_peak_mib": rss_peak_mib, "cpu_peak_cores": cpu_peak_cores, "cpu_cores_at_ratio": 0.8,
                   "client_cpu_cores_at_ratio": 0.1},
        shutdown={"batching": {"exit_code": 0, "stop_s": 0.3}},
        bare={"batch_size": 4, "runs": [bare_run], "throughput_rps": 110.0, "batch_over_unbatched": 0.9,
              "unbatched": {"batch_size": 1, "runs": [{**bare_run, "batch_size": 1}], "throughput_rps": 122.0}},
        smoke_test={"ok": True, "checks": []}, levels=[{**level, "batching": True}],
        nobatch_levels=[{**level, "batching": False, "throughput_rps": 90.9}], batching_gain=[],
    )  # fmt: skip


# /predict answers like kit serve; a text containing "FAIL" gets a 500, so error counting can be tested.
_ECHO_APP = """
import asyncio, sys
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
import uvicorn

app = FastAPI()

@app.get("/healthz")
async def healthz():
    return {"status": "alive"}

@app.get("/readyz")
async def readyz():
    return {"status": "ready"}

@app.get("/metrics")
async def metrics():
    return PlainTextResponse("# TYPE kit_requests counter\\nkit_requests 1\\n")

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    if set(body) != {"texts"}:
        return JSONResponse({"error": "bad body"}, status_code=422)
    if any("FAIL" in t for t in body["texts"]):
        return JSONResponse({"error": "boom"}, status_code=500)
    await asyncio.sleep(0.002)
    probs = {"negative": 0.2, "neutral": 0.3, "positive": 0.5}
    return {"model_version": "echo", "model_variant": "echo",
            "predictions": [{"label": "positive", "score": 0.5, "probs": probs} for _ in body["texts"]]}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


class EchoServer:
    """The stand-in app in a subprocess on a free loopback port."""

    def __init__(self, tmp: Path):
        from kit.deploy.servers import free_port

        self.port = free_port()
        script = tmp / "echo_app.py"
        script.write_text(_ECHO_APP)
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.port)], env=dict(os.environ), cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError("echo app did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# ----------------------------------------------------------------------------------- fake Kubernetes API server
# Just enough of the API for the client's discovery and server-side apply: /version, /api, /apis, resource lists, and
# PATCH on any object path, recorded with its query (dryRun, fieldManager, force) and content type.
_RESOURCES = {
    ("", "v1"): [("namespaces", "Namespace", False), ("services", "Service", True),
                 ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    ("apps", "v1"): [("deployments", "Deployment", True)],
    ("autoscaling", "v2"): [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy", True)],
    ("batch", "v1"): [("jobs", "Job", True)],
}  # fmt: skip


class FakeKubeAPI:
    """A uvicorn server in a thread; `calls` lists (method, path, query, content-type); `reject` names a resource
    whose PATCH answers 422 like an admission webhook."""

    def __init__(self) -> None:
        import threading

        import uvicorn
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        from kit.deploy.servers import free_port

        self.calls: list[tuple[str, str, dict, str]] = []
        self.reject: str | None = None
        app = FastAPI()

        def res_list(group: str, version: str) -> dict:
            gv = f"{group}/{version}" if group else version
            return {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                {"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k,
                 "verbs": ["create", "delete", "get", "list", "patch", "update"]}
                for n, k, ns in _RESOURCES[(group, version)]]}  # fmt: skip

        @app.get("/version")
        @app.get("/version/")
        def version():
            return {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "0" * 40,
                    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
                    "compiler": "gc", "platform": "linux/amd64"}  # fmt: skip

        @app.get("/api")
        def api():
            return {"kind": "APIVersions", "versions": ["v1"]}

        @app.get("/api/v1")
        def core():
            return res_list("", "v1")

        @app.get("/apis")
        def apis():
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                       "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                      for g, v in _RESOURCES if g]  # fmt: skip
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

        @app.get("/apis/{group}/{version}")
        def group_version(group: str, version: str):
            return res_list(group, version)

        @app.patch("/{path:path}")
        async def patch(path: str, request: Request):
            body = await request.body()
            self.calls.append(("PATCH", "/" + path, dict(request.query_params), request.headers.get("content-type")))
            if self.reject and self.reject in path:
                return JSONResponse({"kind": "Status", "status": "Failure", "code": 422, "reason": "Invalid",
                                     "message": f"admission webhook denied {path}"}, status_code=422)  # fmt: skip
            import yaml

            return JSONResponse(yaml.safe_load(body))

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        }))  # fmt: skip
        return path

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
