"""Load test of `kit serve` over HTTP: closed-loop concurrent clients, latency percentiles, server RSS/CPU,
micro-batching on vs off, cold start, and the bare-model ceiling on the same texts (reports/serve.json, plots)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import DeployError

__all__ = [
    "ServerHandle",
    "free_port",
    "start_server",
    "stop_server",
    "smoke_test",
    "load_level",
    "bare_benchmark",
    "summarize",
    "run_loadtest",
    "plot_loadtest",
    "texts_from_parquet",
    "save_plots",
]


# ----------------------------------------------------------------------------------------------- server
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
    params_path.write_text(yaml.safe_dump({"serve": {**serve, "host": "127.0.0.1", "port": port}}))
    log_path = log_dir / f"{label}.log"
    log = open(log_path, "w")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "kit.cli", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--params", str(params_path)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
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


# ------------------------------------------------------------------------------------------- load level
@dataclass
class _Sampler:
    """Samples a process's RSS in a background thread; CPU comes from cpu_times deltas over the window."""

    pid: int
    interval_s: float
    rss: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        import psutil

        self.proc = psutil.Process(self.pid)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.rss.append(self.proc.memory_info().rss / 2**20)
            except psutil.Error:
                return
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def _cpu_s(proc: Any) -> float:
    t = proc.cpu_times()
    return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for POST /predict.

    Why not httpx here: the load generator shares the 2 CPU cores with the server. Against a stand-in app,
    httpx.AsyncClient spent about 5 ms of CPU per request in this loop (more than the server's ~1 ms), CPU taken from
    the model being measured; this connection spends about 0.3 ms. Smoke tests still use httpx.
    """

    def __init__(self, host: str, port: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.head = f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n".encode()

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, body: bytes) -> int:
        """Send one request and read the whole response; returns the status (0 on a transport error)."""
        try:
            return await asyncio.wait_for(self._post(body), self.timeout_s)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
            self.close()  # a fresh connection next time
            return 0

    async def _post(self, body: bytes) -> int:
        if self.writer is None:
            await self._open()
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status


async def _closed_loop(
    url: str, texts: list[str], concurrency: int, duration_s: float, warmup_s: float, marks: dict[str, Any]
) -> tuple[list[tuple[float, float, bool]], int]:
    """N workers, each with its own keep-alive connection, sending one single-text POST /predict at a time until the
    deadline.

    Returns:
        (start, end, ok) per request that started after warm-up, and the number of errors.
    """
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    # Bodies are encoded once up front: JSON encoding is client work that would otherwise be timed and charged.
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    records: list[tuple[float, float, bool]] = []
    errors = 0
    loop_t0 = time.perf_counter()
    measure_from = loop_t0 + warmup_s
    deadline = measure_from + duration_s
    on_measure = marks.pop("on_measure")

    async def mark() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        on_measure()

    async def worker(i: int) -> None:
        nonlocal errors
        conn = _Connection(host, port, timeout_s=30.0)  # far above any sane latency: a hang shows as an error
        # Workers start at spread-out offsets so concurrent requests carry different texts.
        k = (i * len(bodies)) // max(concurrency, 1)
        try:
            while True:
                t = time.perf_counter()
                if t >= deadline:
                    return
                status = await conn.post(bodies[k % len(bodies)])
                k += 1
                end = time.perf_counter()
                if t >= measure_from:
                    records.append((t, end, status == 200))
                    errors += status != 200
        finally:
            conn.close()

    await asyncio.gather(mark(), *(worker(i) for i in range(concurrency)))
    marks["measure_start"], marks["deadline"] = measure_from, deadline
    return records, errors


def _batch_counters(url: str) -> tuple[float, float] | None:
    """(sum, count) of the server's kit_serve_batch_size histogram, or None if it does not expose one."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = count = None
    for fam in text_string_to_metric_families(text):
        if fam.name == "kit_serve_batch_size":
            for smp in fam.samples:
                if smp.name.endswith("_sum"):
                    total = smp.value
                elif smp.name.endswith("_count"):
                    count = smp.value
    return (total, count) if total is not None and count is not None else None


def _run_async(coro: Any) -> Any:
    """Run a coroutine to completion in a fresh thread with its own event loop (works inside Jupyter's loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def load_level(
    url: str,
    texts: list[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    server_pid: int | None = None,
    sample_interval_s: float = 0.25,
) -> dict[str, Any]:
    """Closed-loop load at one concurrency level: throughput, latency percentiles, errors, server RSS/CPU, client CPU.

    Args:
        url: server base URL.
        texts: request texts (one per request, cycled).
        concurrency: concurrent clients.
        duration_s: measured seconds (after warm-up).
        warmup_s: unmeasured seconds first.
        server_pid: process to sample (None: no server figures).
        sample_interval_s: RSS sampling period.

    Returns:
        One row of figures (latencies in ms; CPU in cores, i.e. CPU-seconds per second).
    """
    import psutil

    if not texts:
        raise DeployError("load test needs at least one text")
    me = psutil.Process()
    srv = psutil.Process(server_pid) if server_pid else None
    sampler = _Sampler(server_pid, sample_interval_s) if server_pid else None
    state: dict[str, Any] = {}

    def on_measure() -> None:
        state["batches0"] = _batch_counters(url) if server_pid else None
        state["t0"] = time.perf_counter()
        state["client_cpu0"] = _cpu_s(me)
        if srv:
            state["srv_cpu0"] = _cpu_s(srv)
            sampler.start()
        psutil.cpu_percent(None)  # resets the machine-wide counter

    marks: dict[str, Any] = {"on_measure": on_measure}
    records, errors = _run_async(_closed_loop(url, texts, concurrency, duration_s, warmup_s, marks))
    t1 = time.perf_counter()
    machine_cpu = psutil.cpu_percent(None)
    elapsed = t1 - state["t0"]
    client_cpu = (_cpu_s(me) - state["client_cpu0"]) / elapsed
    row: dict[str, Any] = {"concurrency": concurrency}
    # Requests that started in the window; the last ones end a little after the deadline, so divide by the span
    # from window start to the last completion.
    lat = np.array([(e - s) * 1000 for s, e, ok in records if ok])
    ok_n = len(lat)
    span = (max(e for _, e, _ in records) - marks["measure_start"]) if records else elapsed
    row.update(
        requests=len(records),
        errors=errors,
        throughput_rps=round(ok_n / span, 2) if span > 0 else 0.0,
        p50_ms=_pct(lat, 50),
        p95_ms=_pct(lat, 95),
        p99_ms=_pct(lat, 99),
        mean_ms=round(float(lat.mean()), 2) if ok_n else None,
        max_ms=round(float(lat.max()), 2) if ok_n else None,
        client_cpu_cores=round(client_cpu, 3),
        machine_cpu_percent=round(machine_cpu, 1),
        window_s=round(span, 2),
    )
    if srv:
        # The server's own count of texts per model run over the window: what micro-batching actually formed.
        b0, b1 = state.get("batches0"), _batch_counters(url)
        if b0 and b1 and b1[1] > b0[1]:
            row["mean_batch_size"] = round((b1[0] - b0[0]) / (b1[1] - b0[1]), 2)
        sampler.stop()
        row["server_cpu_cores"] = round((_cpu_s(srv) - state["srv_cpu0"]) / elapsed, 3)
        row["server_rss_peak_mib"] = round(max(sampler.rss), 1) if sampler.rss else None
        row["server_rss_mean_mib"] = round(float(np.mean(sampler.rss)), 1) if sampler.rss else None
    return row


# ------------------------------------------------------------------------------------------- bare model
def bare_benchmark(
    model_dir: str | Path,
    texts: list[str],
    batch_size: int,
    threads: int,
    seconds: float,
    max_length: int = 64,
    model: Any = None,
) -> dict[str, Any]:
    """The ceiling: the serving model alone (same tokenizer + ONNX Runtime session class as the server), consecutive
    batches of `batch_size` texts taken in order from `texts`, for about `seconds`.

    Returns:
        texts per second, batches run, median and p99 batch latency (ms).
    """
    from kit.batching import OnnxTextClassifier, read_model_dir

    model = model or OnnxTextClassifier(read_model_dir(model_dir, max_length), threads)
    n = len(texts)
    batches = [[texts[(i + j) % n] for j in range(batch_size)] for i in range(0, max(n, batch_size), batch_size)]
    model.predict_proba(batches[0])  # warm-up: first run allocates
    times = []
    done = 0
    t_start = time.perf_counter()
    k = 0
    while time.perf_counter() - t_start < seconds or len(times) < 3:
        b = batches[k % len(batches)]
        t = time.perf_counter()
        model.predict_proba(b)
        times.append(time.perf_counter() - t)
        done += len(b)
        k += 1
    total = time.perf_counter() - t_start
    ms = np.array(times) * 1000
    return {
        "batch_size": batch_size,
        "threads": threads,
        "batches": len(times),
        "throughput_rps": round(done / total, 2),
        "batch_p50_ms": _pct(ms, 50),
        "batch_p99_ms": _pct(ms, 99),
    }


# ------------------------------------------------------------------------------------------ orchestrate
def summarize(
    levels: list[dict[str, Any]],
    nobatch: list[dict[str, Any]],
    bare: list[dict[str, Any]],
    ratio_concurrency: int | None,
    p99_target_ms: float,
) -> dict[str, Any]:
    """Derived figures: server/bare ratio, batching gain, sustainable concurrency, resource peaks.

    Args:
        levels: load_level rows with micro-batching on.
        nobatch: rows with max batch 1 (may be empty).
        bare: bare_benchmark runs at serve.max_batch_size (their mean is the ceiling).
        ratio_concurrency: level for the ratios (None: highest level meeting the p99 target).
        p99_target_ms: latency objective.
    """
    meets = [r for r in levels if r["errors"] == 0 and r["p99_ms"] is not None and r["p99_ms"] <= p99_target_ms]
    sustainable = max((r["concurrency"] for r in meets), default=None)
    c = ratio_concurrency if ratio_concurrency is not None else sustainable
    if c is None:  # nothing met the target: compare at the lowest level, and say so
        c = min(r["concurrency"] for r in levels)
    at = next(r for r in levels if r["concurrency"] == c)
    ceiling = float(np.mean([b["throughput_rps"] for b in bare])) if bare else None
    out: dict[str, Any] = {
        "ratio_concurrency": c,
        "sustainable_concurrency": sustainable,
        "throughput_per_pod_rps": at["throughput_rps"],
        "bare_throughput_rps": round(ceiling, 2) if ceiling else None,
        "server_over_bare": round(at["throughput_rps"] / ceiling, 3) if ceiling else None,
        "p99_ms_at_ratio": at["p99_ms"],
        "p99_target_ms": p99_target_ms,
        "best_throughput_rps": max(r["throughput_rps"] for r in levels),
    }
    out["targets"] = {
        "server_over_bare_ge_0.85": bool(out["server_over_bare"] is not None and out["server_over_bare"] >= 0.85),
        "p99_le_target_at_ratio": bool(at["p99_ms"] is not None and at["p99_ms"] <= p99_target_ms),
    }
    gains = []
    for nb in nobatch:
        on = next((r for r in levels if r["concurrency"] == nb["concurrency"]), None)
        if on and nb["throughput_rps"]:
            gains.append(
                {"concurrency": nb["concurrency"], "batching_rps": on["throughput_rps"],
                 "nobatch_rps": nb["throughput_rps"], "ratio": round(on["throughput_rps"] / nb["throughput_rps"], 3),
                 "p99_batching_ms": on["p99_ms"], "p99_nobatch_ms": nb["p99_ms"]}
            )  # fmt: skip
    out["batching_gain"] = gains
    g = next((x for x in gains if x["concurrency"] == c), None)
    out["batching_over_nobatch"] = g["ratio"] if g else None
    out["targets"]["batching_beats_nobatch"] = bool(g and g["ratio"] > 1.0)
    rows = levels + nobatch
    rss = [r.get("server_rss_peak_mib") for r in rows if r.get("server_rss_peak_mib")]
    cpu = [r.get("server_cpu_cores") for r in levels if r.get("server_cpu_cores") is not None]
    out["resources"] = {
        "rss_peak_mib": max(rss) if rss else None,
        "cpu_peak_cores": max(cpu) if cpu else None,
        "cpu_cores_at_ratio": at.get("server_cpu_cores"),
        "client_cpu_cores_at_ratio": at.get("client_cpu_cores"),
    }
    return out


def run_loadtest(
    model_dir: str | Path,
    texts: list[str],
    serve: dict[str, Any],
    deploy: Any,
    work_dir: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole measurement: two servers (micro-batching on, and max batch 1), cold starts, smoke test, load at each
    concurrency level (on and off interleaved), bare-model ceiling before and after, graceful stop.

    Args:
        model_dir: serving model dir.
        texts: request texts (real test texts).
        serve: the `serve` params section as a dict.
        deploy: DeployParams (levels, durations, targets).
        work_dir: server logs and params files.
        progress: show a tqdm bar over the runs.

    Returns:
        The report (what reports/serve.json holds).
    """
    import psutil
    from tqdm import tqdm

    from kit.batching import OnnxTextClassifier, read_model_dir

    d = deploy
    meta = read_model_dir(model_dir, int(serve.get("max_length", 64)))
    bs, threads = int(serve["max_batch_size"]), int(serve["threads"])
    nobatch_levels = d.nobatch_levels if d.nobatch_levels is not None else d.concurrency_levels
    work_dir = Path(work_dir)
    # Other work on the machine competes with the server; the load averages make that visible in the report.
    load_before = os.getloadavg()[0]
    servers: dict[str, ServerHandle] = {}
    report: dict[str, Any] = {}
    try:
        servers["batching"] = start_server(
            model_dir, serve, work_dir, "batching", d.startup_timeout_s, probe_text=texts[0]
        )
        servers["nobatch"] = start_server(
            model_dir, {**serve, "max_batch_size": 1}, work_dir, "nobatch", d.startup_timeout_s, probe_text=texts[0]
        )
        smoke = smoke_test(servers["batching"].url, texts, meta.labels)
        model = OnnxTextClassifier(meta, threads)
        bare, bare1 = [], []
        levels, nobatch = [], []
        plan = [("bare", None)]
        for c in d.concurrency_levels:
            plan.append(("batching", c))
            if c in nobatch_levels:
                plan.append(("nobatch", c))
        plan.append(("bare", None))
        bar = tqdm(plan, desc="load test", disable=not progress, file=sys.stderr)
        for kind, c in bar:
            bar.set_postfix_str(f"{kind} c={c}" if c else kind)
            if kind == "bare":
                bare.append(bare_benchmark(model_dir, texts, bs, threads, d.bare_seconds, model=model))
                bare1.append(bare_benchmark(model_dir, texts, 1, threads, d.bare_seconds / 2, model=model))
                continue
            h = servers[kind]
            row = load_level(h.url, texts, c, d.duration_s, d.warmup_s, h.pid, d.sample_interval_s)
            row["batching"] = kind == "batching"
            (levels if kind == "batching" else nobatch).append(row)
        del model
        grace = float(serve.get("graceful_timeout_s", 30)) + 10
        stops = {k: stop_server(h, timeout_s=grace) for k, h in servers.items()}
    finally:
        for h in servers.values():
            if h.proc.poll() is None:
                stop_server(h, timeout_s=10)
    report["model"] = {
        "dir": str(model_dir),
        "variant": meta.variant,
        "version": meta.version,
        "size_mib": round((Path(model_dir) / "model.onnx").stat().st_size / 2**20, 2),
        "max_length": meta.max_length,
    }
    report["config"] = {
        "serve": {k: serve[k] for k in ("max_batch_size", "max_delay_ms", "threads") if k in serve},
        "concurrency_levels": list(d.concurrency_levels),
        "nobatch_levels": list(nobatch_levels),
        "duration_s": d.duration_s,
        "warmup_s": d.warmup_s,
        "texts": len(texts),
        "cpu_count": psutil.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "client": "closed loop: one asyncio event loop, one keep-alive HTTP/1.1 connection per client, on the same "
        "machine as the server; each request carries one text",
    }
    report["smoke_test"] = smoke
    report["cold_start"] = {
        "ready_s": round(servers["batching"].ready_s, 3),
        "first_request_ms": round(servers["batching"].first_request_ms, 2),
        "nobatch_ready_s": round(servers["nobatch"].ready_s, 3),
    }
    report["shutdown"] = stops
    report["bare"] = {"batch_size": bs, "runs": bare, "batch1_runs": bare1}
    report["levels"] = levels
    report["nobatch_levels"] = nobatch
    report.update(summarize(levels, nobatch, bare, d.ratio_concurrency, d.p99_target_ms))
    b1 = [b["throughput_rps"] for b in bare1]
    report["bare"]["batch1_throughput_rps"] = round(float(np.mean(b1)), 2) if b1 else None
    # Each text padded alone costs less than in a batch padded to its longest text; whether batching can pay at all
    # on this machine shows in the bare-model ratio of the two, and the HTTP cost in nobatch server / bare batch 1.
    if b1:
        ceiling1 = float(np.mean(b1))
        report["bare"]["batch_over_batch1"] = round(report["bare_throughput_rps"] / ceiling1, 3)
        nb = next((r for r in nobatch if r["concurrency"] == report["ratio_concurrency"]), None)
        report["nobatch_over_bare_batch1"] = round(nb["throughput_rps"] / ceiling1, 3) if nb else None
    return report


def plot_loadtest(report: dict[str, Any]) -> tuple[Any, Any]:
    """Two figures: throughput vs concurrency and p99 latency vs concurrency, micro-batching on vs off, with the
    bare-model ceiling and the p99 target as reference lines."""
    import matplotlib.pyplot as plt

    on, off = report["levels"], report["nobatch_levels"]
    figs = []
    for key, title, ylabel in (
        ("throughput_rps", "Throughput vs concurrency", "requests/s (1 text each)"),
        ("p99_ms", "p99 latency vs concurrency", "p99 latency (ms)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax.plot([r["concurrency"] for r in on], [r[key] for r in on], "o-", label="micro-batching on")
        if off:
            ax.plot([r["concurrency"] for r in off], [r[key] for r in off], "s--", label="max batch 1")
        if key == "throughput_rps" and report.get("bare_throughput_rps"):
            ax.axhline(report["bare_throughput_rps"], color="grey", ls=":",
                       label=f"bare model, batch {report['bare']['batch_size']}")  # fmt: skip
            ax.axhline(0.85 * report["bare_throughput_rps"], color="grey", ls="-.", lw=0.8, label="85% of bare")
        if key == "p99_ms":
            ax.axhline(report["p99_target_ms"], color="red", ls=":", label=f"target {report['p99_target_ms']:.0f} ms")
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append(fig)
    return figs[0], figs[1]


def texts_from_parquet(path: str | Path, column: str = "text", max_texts: int = 2000, seed: int = 0) -> list[str]:
    """Up to `max_texts` texts from a Parquet split, in a seeded random order (so the sample spans the file)."""
    import pyarrow.parquet as pq

    from kit.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (run the data stage first)")
    table = pq.read_table(path)
    if column not in table.column_names:
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)})")
    texts = [t for t in table.column(column).to_pylist() if isinstance(t, str) and t]
    if not texts:
        raise DataError(f"{path}: column {column!r} has no texts")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(texts))[:max_texts]
    return [texts[i] for i in idx]



def save_plots(report: dict[str, Any], plots_dir: str | Path) -> list[Path]:
    """Save the two load-test figures as PNGs (serve_throughput.png, serve_p99.png) and return their paths."""
    from kit.io import save_figure

    fig_t, fig_p = plot_loadtest(report)
    plots_dir = Path(plots_dir)
    return [save_figure(fig_t, plots_dir / "serve_throughput.png"), save_figure(fig_p, plots_dir / "serve_p99.png")]
