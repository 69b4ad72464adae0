"""Simulated production over HTTP: the scenarios' windows replayed through a real `kit serve` subprocess with its
prediction log on, and the log's cost measured as server throughput with it on and off at the ratio concurrency."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from kit.core.params import ServeParams
from kit.deploy.loadclient import load_level, post_all, run_async
from kit.deploy.servers import ServerHandle, start_server, stop_server
from kit.monitor.features import MonitorError
from kit.monitor.report import LoggingOverhead, OverheadRun
from kit.monitor.scenarios import Scenario
from kit.serve.recorder import REQUEST_ID_HEADER

__all__ = ["serve_config", "running_server", "replay_scenarios", "measure_overhead", "log_counters"]

LOG_COUNTER = "kit_prediction_log_records_total"


def serve_config(serve: ServeParams, log_dir: Path | None, *, embeddings: bool) -> dict[str, Any]:
    """The `serve` section a replay server runs with: the pipeline's own, the prediction log on (into `log_dir`) or
    off (None), and no access log (a line per request would cost the replay what production pays elsewhere)."""
    section = serve.model_dump(mode="json")
    log = dict(section["prediction_log"])
    log.update(enabled=log_dir is not None, embeddings=embeddings)
    if log_dir is not None:
        log["dir"] = str(log_dir)
    return {**section, "prediction_log": log, "access_log": False}


@contextmanager
def running_server(model_dir: Path, serve: dict[str, Any], label: str, cwd: Path) -> Iterator[ServerHandle]:
    """`kit serve` on a free loopback port for the duration of the block; its console log and params file live in
    a temporary folder, and SIGTERM at the end drains it (the prediction log is flushed and closed then)."""
    with tempfile.TemporaryDirectory(prefix=f"kit-monitor-{label}-") as tmp:
        h = start_server(model_dir, serve, tmp, label=label, cwd=cwd)
        try:
            yield h
        finally:
            stopped = stop_server(h)
            if stopped["exit_code"] != 0:
                raise MonitorError(f"kit serve ({label}) exited with {stopped['exit_code']}:\n{h.log_tail()}")


def replay_scenarios(url: str, scenarios: Sequence[Scenario], *, concurrency: int) -> int:
    """Send every window's texts, one single-text POST /predict each with its request id in `x-request-id`, as
    `concurrency` clients do; windows in order, so a scenario's log reads like its traffic. The sender is the load
    test's lean keep-alive client: it shares the machine's cores with the server, and httpx's client took enough of
    them to slow the replay by 1.6x (190 against 300-330 texts/s on 2 cores, the same server).

    Returns:
        Requests sent.

    Raises:
        MonitorError: a request was not answered 200 (names the request id and the answer).
    """
    items = [
        (rid, text) for s in scenarios for w in s.windows for rid, text in zip(w.request_ids, w.texts, strict=True)
    ]
    header = REQUEST_ID_HEADER.encode()
    requests = [(b"%s: %s\r\n" % (header, rid.encode()), orjson.dumps({"texts": [text]})) for rid, text in items]
    failures = run_async(post_all(url, requests, concurrency))
    if failures:
        i, status, answer = failures[0]
        said = answer[:200].decode(errors="replace")
        raise MonitorError(f"replay: the server refused request {items[i][0]}: {status} {said}")
    return len(items)


def log_counters(url: str) -> dict[str, float]:
    """The server's prediction-log counters (outcome -> records) from its /metrics.

    Raises:
        MonitorError: the server exposes no such counter (prediction logging is off or the server predates it).
    """
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10.0).text
    out = {
        smp.labels.get("outcome", ""): smp.value
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
        if smp.name == LOG_COUNTER
    }
    if not out:
        raise MonitorError(f"{url}/metrics has no {LOG_COUNTER}: is serve.prediction_log.enabled on?")
    return out


def measure_overhead(
    model_dir: Path,
    serve: ServeParams,
    texts: list[str],
    *,
    concurrency: int,
    duration_s: float,
    repeats: int,
    cwd: Path,
    embeddings: bool,
) -> LoggingOverhead:
    """Server throughput with the prediction log off and on: two servers started once, measured in back-to-back
    (off, on) pairs whose order alternates, so a slow spell of the machine hits both; the ratio is the median over
    the pairs.

    Args:
        model_dir: the serving dir.
        serve: the pipeline's serve params.
        texts: request texts, cycled by the closed-loop clients.
        concurrency: clients (the load test's ratio concurrency).
        duration_s: measured seconds per run (after 1 s of warm-up).
        repeats: runs per setting.
        cwd: the servers' working directory.
        embeddings: whether the logging server also returns pooled embeddings (as the monitor needs).
    """
    runs: list[OverheadRun] = []
    with tempfile.TemporaryDirectory(prefix="kit-monitor-overhead-") as tmp:
        log_dir = Path(tmp) / "log"
        with ExitStack() as stack:
            # Both servers stay up between runs: a restart per run cost more time than the warm-up it needs.
            servers = {
                logging: stack.enter_context(running_server(
                    model_dir, serve_config(serve, log_dir if logging else None, embeddings=embeddings),
                    f"overhead-{'on' if logging else 'off'}", cwd,
                ))
                for logging in (False, True)
            }  # fmt: skip
            for i in range(repeats):
                for logging in (False, True) if i % 2 == 0 else (True, False):
                    h = servers[logging]
                    row = load_level(h.url, texts, concurrency, duration_s, warmup_s=1.0, server_pid=h.proc.pid)
                    runs.append(
                        OverheadRun(logging=logging, throughput_rps=row["throughput_rps"], p99_ms=row["p99_ms"],
                                    errors=row["errors"])
                    )  # fmt: skip
            dropped = int(log_counters(servers[True].url).get("dropped", 0))
        # After the drain: every accepted record is in a closed file now.
        written = sum(sum(1 for _ in f.open()) for f in log_dir.glob("*.jsonl"))
    off = statistics.median(r.throughput_rps for r in runs if not r.logging)
    on = statistics.median(r.throughput_rps for r in runs if r.logging)
    # Each on run against the off run beside it: the machine's speed drifts over a minute of load, and a
    # back-to-back pair shares that drift where medians over all runs would not.
    pairs = []
    for a, b in zip(runs[::2], runs[1::2], strict=True):
        run_off, run_on = (b, a) if a.logging else (a, b)
        if run_off.throughput_rps:
            pairs.append(run_on.throughput_rps / run_off.throughput_rps)
    return LoggingOverhead(
        concurrency=concurrency, duration_s=duration_s, runs=runs, off_rps=off, on_rps=on,
        ratio=round(statistics.median(pairs), 4) if pairs else 0.0, pair_ratios=[round(r, 4) for r in pairs],
        records_written=written, records_dropped=dropped,
    )  # fmt: skip
