"""The replica arm of the load test: the server's cores split into smaller servers, each pinned to its own cores (as
pods with a CPU limit of `threads` on one node), the clients spread over them as a Service spreads connections."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from kit.core.errors import DeployError
from kit.deploy.loadclient import load_level
from kit.deploy.servers import ServerHandle, start_server, stop_server

__all__ = ["core_sets", "start_replicas", "load_replicas", "replicas_section"]


def core_sets(total_threads: int, threads_per_replica: int) -> list[list[int]] | None:
    """The cores each replica is pinned to: consecutive runs of `threads_per_replica` of the cores this process may
    use. None when no split exists (one replica would hold every thread, or the split does not divide evenly).

    Raises:
        DeployError: fewer usable cores than `total_threads` (the replicas would share cores a pod would not).
    """
    if threads_per_replica >= total_threads or total_threads % threads_per_replica:
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < total_threads:
        raise DeployError(
            f"deploy.replica_threads: splitting serve.threads={total_threads} needs {total_threads} usable cores, "
            f"this process may use {len(cores)} ({cores})"
        )
    step = threads_per_replica
    return [cores[i : i + step] for i in range(0, total_threads, step)]


def start_replicas(
    model_dir: str | Path,
    serve: dict[str, Any],
    work_dir: str | Path,
    cores: list[list[int]],
    timeout_s: float,
    probe_text: str,
) -> list[ServerHandle]:
    """One `kit serve` per core set, with `serve.threads` set to the set's size and pinned to it from its first
    instruction on (every thread it starts, ONNX Runtime's included, inherits the affinity).

    Raises:
        DeployError: a replica would not start (the ones already started are stopped first).
    """
    handles: list[ServerHandle] = []
    try:
        for i, cs in enumerate(cores):
            params = {**serve, "threads": len(cs)}
            handles.append(
                start_server(model_dir, params, work_dir, f"replica{i}", timeout_s, probe_text=probe_text, cpus=cs)
            )
    except BaseException:
        for h in handles:
            stop_server(h, timeout_s=10)
        raise
    return handles


def load_replicas(
    handles: list[ServerHandle], texts: list[str], concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """Closed-loop load of `concurrency` clients spread over the replicas (as even as it divides), all at once.

    Returns:
        One row: summed throughput and server CPU; p99 the highest replica's (an upper bound of the pooled p99).
    """
    n = len(handles)
    shares = [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]
    rows: list[dict[str, Any] | None] = [None] * n
    errors: list[BaseException] = []

    def drive(i: int) -> None:
        try:
            h = handles[i]
            rows[i] = load_level(h.url, texts[i::n] or texts, shares[i], duration_s, warmup_s, h.pid)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=drive, args=(i,), name=f"replica-load-{i}") for i in range(n) if shares[i]]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    got = [r for r in rows if r is not None]
    p99 = [r["p99_ms"] for r in got if r["p99_ms"] is not None]
    return {
        "concurrency": concurrency,
        "clients_per_replica": shares,
        "requests": sum(r["requests"] for r in got),
        "errors": sum(r["errors"] for r in got),
        "throughput_rps": round(sum(r["throughput_rps"] for r in got), 2),
        "p99_ms": max(p99) if p99 else None,
        "replica_p99_ms": [r["p99_ms"] for r in got],
        "mean_batch_size": [r.get("mean_batch_size") for r in got],
        "server_cpu_cores": round(sum(r.get("server_cpu_cores") or 0.0 for r in got), 3),
        # One client process drives every replica: its CPU is counted once.
        "client_cpu_cores": max(r["client_cpu_cores"] for r in got),
    }


def replicas_section(
    rows: list[dict[str, Any]],
    single: list[dict[str, Any]],
    cores: list[list[int]],
    bare_rps: float | None,
    p99_target_ms: float,
) -> dict[str, Any]:
    """The replica arm beside the single server at the same levels (measured interleaved), and its best rate within
    the p99 target over the bare model's ceiling."""
    by_c = {r["concurrency"]: r for r in single}
    compared = [
        {"concurrency": r["concurrency"], "replicas_rps": r["throughput_rps"],
         "single_rps": by_c[r["concurrency"]]["throughput_rps"],
         "ratio": round(r["throughput_rps"] / by_c[r["concurrency"]]["throughput_rps"], 3),
         "p99_replicas_ms": r["p99_ms"], "p99_single_ms": by_c[r["concurrency"]]["p99_ms"]}
        for r in rows if r["concurrency"] in by_c and by_c[r["concurrency"]]["throughput_rps"]
    ]  # fmt: skip
    ok = [r for r in rows if r["errors"] == 0 and r["p99_ms"] is not None and r["p99_ms"] <= p99_target_ms]
    best = max(ok, key=lambda r: r["throughput_rps"], default=None)
    return {
        "replicas": len(cores),
        "threads_per_replica": len(cores[0]),
        "cores": cores,
        "levels": rows,
        "over_single": compared,
        "best_rps_within_p99": best["throughput_rps"] if best else None,
        "best_concurrency": best["concurrency"] if best else None,
        "replicas_over_bare": round(best["throughput_rps"] / bare_rps, 3) if best and bare_rps else None,
    }
