"""The model server as a subprocess for the load test: `python -m kit.serve` on a free loopback port (never the root
CLI), timed from spawn to ready and first answer, smoke-tested on every endpoint, and stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import DeployError

__all__ = ["ServerHandle", "free_port", "start_server", "stop_server", "smoke_test"]


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    """A `kit serve` subprocess on loopback and what its start cost."""

    proc: subprocess.Popen
    url: str
    port: int
    log_path: Path
    params_path: Path
    ready_s: float = float("nan")  # process start -> first 200 from /readyz
    first_request_ms: float = float("nan")  # first POST /predict after ready
    label: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_server(
    model_dir: str | Path,
    serve: dict[str, Any],
    log_dir: str | Path,
    label: str = "server",
    timeout_s: float = 120.0,
    cwd: str | Path | None = None,
    probe_text: str = "hello",
    cpus: list[int] | None = None,
) -> ServerHandle:
    """Start `kit serve MODEL_DIR` on a free loopback port with the given serve params; wait until /readyz is 200.

    The cold start is measured from just before the process is spawned to the first ready answer, then one
    POST /predict measures the first-request latency.

    Args:
        model_dir: serving model dir.
        serve: the `serve` params section (dict); host/port are set here.
        log_dir: where the server's output and its params file go.
        label: name used in file names and the report.
        timeout_s: longest wait for readiness.
        cwd: working directory of the server (default: current).
        probe_text: text of the first request.
        cpus: cores to pin the server to, from its start (as a pod's CPU limit would hold it); None: any core.

    Returns:
        The running server.

    Raises:
        DeployError: the server exited or did not get ready in time (with its last log lines).
    """
    import httpx
    import yaml

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    params_path = log_dir / f"params_{label}.yaml"
    # One port and no API keys: the harness reads /metrics beside /predict, and several servers run at once.
    one_port = {"host": "127.0.0.1", "port": port, "admin_port": None, "api_key_file": None}
    params_path.write_text(yaml.safe_dump({"serve": {**serve, **one_port}}))
    log_path = log_dir / f"{label}.log"
    log = open(log_path, "w")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "kit.serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--params", str(params_path)]  # fmt: skip
    t0 = time.perf_counter()
    # Pinned before the interpreter starts, so every thread it makes (ONNX Runtime's too) inherits the cores.
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, preexec_fn=pin)
    log.close()
    h = ServerHandle(proc, f"http://127.0.0.1:{port}", port, log_path, params_path, label=label)
    deadline = t0 + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise DeployError(f"kit serve ({label}) exited with {proc.returncode} before ready:\n{h.log_tail()}")
            try:
                if client.get(h.url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                stop_server(h, timeout_s=5)
                raise DeployError(f"kit serve ({label}) not ready after {timeout_s:.0f} s:\n{h.log_tail()}")
            time.sleep(0.02)
        h.ready_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        r = client.post(h.url + "/predict", json={"texts": [probe_text]}, timeout=30.0)
        h.first_request_ms = (time.perf_counter() - t1) * 1000
        if r.status_code != 200:
            stop_server(h, timeout_s=5)
            raise DeployError(f"kit serve ({label}): first request answered {r.status_code}: {r.text[:300]}")
    return h


def stop_server(h: ServerHandle, timeout_s: float = 60.0) -> dict[str, Any]:
    """SIGTERM the server and wait for its graceful drain.

    Returns:
        exit code and seconds from SIGTERM to exit (killed: exit code None after SIGKILL).
    """
    if h.proc.poll() is not None:
        return {"exit_code": h.proc.returncode, "stop_s": 0.0}
    t0 = time.perf_counter()
    h.proc.send_signal(signal.SIGTERM)
    try:
        code = h.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        h.proc.kill()
        h.proc.wait()
        code = None
    return {"exit_code": code, "stop_s": round(time.perf_counter() - t0, 3)}


def smoke_test(url: str, texts: list[str], labels: list[str] | None = None) -> dict[str, Any]:
    """Check every endpoint once: /healthz, /readyz, /metrics, POST /predict with a few texts, and a bad request.

    Returns:
        A row per check with status and what was verified.

    Raises:
        DeployError: a check failed (names it and what came back).
    """
    import httpx

    rows = []
    with httpx.Client(base_url=url, timeout=30.0) as c:
        for path in ("/healthz", "/readyz"):
            r = c.get(path)
            if r.status_code != 200:
                raise DeployError(f"smoke test: GET {path} answered {r.status_code}: {r.text[:200]}")
            rows.append({"check": f"GET {path}", "status": r.status_code, "detail": r.text[:80]})
        sample = texts[:4]
        r = c.post("/predict", json={"texts": sample})
        if r.status_code != 200:
            raise DeployError(f"smoke test: POST /predict answered {r.status_code}: {r.text[:200]}")
        body = r.json()
        preds = body.get("predictions")
        if not isinstance(preds, list) or len(preds) != len(sample):
            raise DeployError(f"smoke test: expected {len(sample)} predictions, got {str(body)[:200]}")
        for p in preds:
            total = sum(p["probs"].values())
            if abs(total - 1) > 1e-3 or p["label"] not in p["probs"] or (labels and p["label"] not in labels):
                raise DeployError(f"smoke test: malformed prediction {p}")
        rows.append(
            {"check": "POST /predict", "status": r.status_code,
             "detail": f"{len(preds)} predictions, model {body.get('model_variant')}/{body.get('model_version')}"}
        )  # fmt: skip
        r = c.post("/predict", json={"text": "wrong key"})
        if r.status_code != 422:
            raise DeployError(f"smoke test: a malformed body should get 422, got {r.status_code}")
        rows.append({"check": "POST /predict (bad body)", "status": r.status_code, "detail": r.text[:80]})
        r = c.get("/metrics")
        if r.status_code != 200 or "# TYPE" not in r.text:
            raise DeployError(f"smoke test: /metrics answered {r.status_code} without Prometheus text")
        rows.append({"check": "GET /metrics", "status": r.status_code, "detail": f"{len(r.text.splitlines())} lines"})
    return {"ok": True, "checks": rows}
