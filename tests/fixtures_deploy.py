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

__all__ = ["tiny_serving_dir", "write_texts_parquet", "EchoServer", "TEXTS"]

ROOT = Path(__file__).resolve().parents[1]

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


# /predict answers like kit serve; a text containing "FAIL" gets a 500, so error counting can be tested.
_ECHO_APP = '''
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
'''


class EchoServer:
    """The stand-in app in a subprocess on a free loopback port."""

    def __init__(self, tmp: Path):
        from kit.loadtest import free_port

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
