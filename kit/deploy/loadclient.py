"""Closed-loop concurrent load on a running model server at one level: latency percentiles, throughput, errors, the
server's RSS/CPU and batch sizes, and the client's own CPU (starting and stopping it: kit.deploy.servers)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kit.core.errors import DeployError

__all__ = ["load_level", "pct", "post_all", "run_async"]


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

    async def post(self, body: bytes, headers: bytes = b"") -> int:
        """Send one request and read the whole response; returns the status (0 on a transport error)."""
        return (await self.request(body, headers))[0]

    async def request(self, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
        """Send one request with extra header lines (each ending in CRLF); returns (status, body), (0, reason) on a
        transport error."""
        try:
            return await asyncio.wait_for(self._post(body, headers), self.timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()  # a fresh connection next time
            return 0, repr(e).encode()

    async def _post(self, body: bytes, extra: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        self.writer.write(self.head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        answer = b""
        if "content-length" in headers:
            answer = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append((await self.reader.readexactly(size + 2))[:-2])
                if size == 0:
                    break
            answer = b"".join(parts)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer


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
    snapshot = marks.pop("snapshot", None)

    async def mark() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        on_measure()
        if snapshot is not None:
            # A blocking HTTP GET: in a thread, so the workers keep sending while the window opens.
            marks["snapshot"] = await asyncio.to_thread(snapshot)

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


def _batch_counters(url: str) -> tuple[float, float, float | None] | None:
    """(sum, count) of the server's kit_serve_batch_size histogram and its batch wait limit in seconds (None when not
    exposed), or None if it exposes no batch histogram."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = count = wait = None
    for fam in text_string_to_metric_families(text):
        if fam.name == "kit_serve_batch_size":
            for smp in fam.samples:
                if smp.name.endswith("_sum"):
                    total = smp.value
                elif smp.name.endswith("_count"):
                    count = smp.value
        elif fam.name == "kit_serve_batch_wait_limit_seconds" and fam.samples:
            wait = fam.samples[0].value
    return (total, count, wait) if total is not None and count is not None else None


def run_async(coro: Any) -> Any:
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


async def post_all(url: str, requests: Sequence[tuple[bytes, bytes]], concurrency: int, timeout_s: float = 60.0
                   ) -> list[tuple[int, int, bytes]]:  # fmt: skip
    """POST /predict each (extra header lines, body) once, in order, from `concurrency` keep-alive connections (the
    lean client the load test uses, so the sender takes little of the server's CPU); stops at the first failure.

    Returns:
        (index, status, answer) of every request not answered 200: empty when all were.
    """
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    pending = iter(enumerate(requests))
    failures: list[tuple[int, int, bytes]] = []

    async def worker() -> None:
        conn = _Connection(host, port, timeout_s)
        try:
            for i, (headers, body) in pending:  # one shared iterator: each request goes out once
                status, answer = await conn.request(body, headers)
                if status != 200:
                    failures.append((i, status, answer))
                if failures:
                    return
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


def pct(values: np.ndarray, q: float) -> float | None:
    """The q-th percentile of `values` in their unit, rounded to 0.01 (None when there are none)."""
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
        state["t0"] = time.perf_counter()
        state["client_cpu0"] = _cpu_s(me)
        if srv:
            state["srv_cpu0"] = _cpu_s(srv)
            sampler.start()
        psutil.cpu_percent(None)  # resets the machine-wide counter

    marks: dict[str, Any] = {"on_measure": on_measure}
    if server_pid:
        marks["snapshot"] = lambda: _batch_counters(url)  # the server's batch counters at the window start
    records, errors = run_async(_closed_loop(url, texts, concurrency, duration_s, warmup_s, marks))
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
        p50_ms=pct(lat, 50),
        p95_ms=pct(lat, 95),
        p99_ms=pct(lat, 99),
        mean_ms=round(float(lat.mean()), 2) if ok_n else None,
        max_ms=round(float(lat.max()), 2) if ok_n else None,
        client_cpu_cores=round(client_cpu, 3),
        machine_cpu_percent=round(machine_cpu, 1),
        window_s=round(span, 2),
    )
    if srv:
        # The server's own count of texts per model run over the window: what micro-batching actually formed.
        b0, b1 = marks.get("snapshot"), _batch_counters(url)
        if b0 and b1 and b1[1] > b0[1]:
            row["mean_batch_size"] = round((b1[0] - b0[0]) / (b1[1] - b0[1]), 2)
        if b1 and b1[2] is not None:  # the adaptive wait the batcher had settled on by the end of the window
            row["batch_wait_limit_ms"] = round(b1[2] * 1000, 3)
        sampler.stop()
        row["server_cpu_cores"] = round((_cpu_s(srv) - state["srv_cpu0"]) / elapsed, 3)
        row["server_rss_peak_mib"] = round(max(sampler.rss), 1) if sampler.rss else None
        row["server_rss_mean_mib"] = round(float(np.mean(sampler.rss)), 1) if sampler.rss else None
    return row
