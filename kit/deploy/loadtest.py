"""Load-test plan and results for `kit serve`: micro-batching on vs off across concurrency levels (each sweep stops
once saturated), cold start, the bare-model ceiling (kit.deploy.bare), and the goals judged, for reports/serve.json."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kit.deploy.bare import bare_benchmark, bare_grid, bare_section
from kit.deploy.goals import judge_goals, saturated
from kit.deploy.loadclient import load_level
from kit.deploy.replicas import core_sets, load_replicas, replicas_section, start_replicas
from kit.deploy.servers import ServerHandle, smoke_test, start_server, stop_server

__all__ = ["bare_benchmark", "summarize", "run_loadtest", "texts_from_parquet"]


# ------------------------------------------------------------------------------------------ orchestrate
def summarize(
    levels: list[dict[str, Any]],
    nobatch: list[dict[str, Any]],
    bare_rps: float | None,
    ratio_concurrency: int | None,
    p99_target_ms: float,
) -> dict[str, Any]:
    """Derived figures: server/bare ratio, batching gain per level, sustainable concurrency, resource peaks.

    Args:
        levels: load_level rows with micro-batching on.
        nobatch: rows with max batch 1 (may be empty).
        bare_rps: the bare-model ceiling (best rate over batch sizes and bucketing), None when not measured.
        ratio_concurrency: level for the ratios (None: the plan's choice, the highest level meeting the p99 target).
        p99_target_ms: latency objective.
    """
    meets = [r for r in levels if r["errors"] == 0 and r["p99_ms"] is not None and r["p99_ms"] <= p99_target_ms]
    sustainable = max((r["concurrency"] for r in meets), default=None)
    if ratio_concurrency is not None:
        c, rule = ratio_concurrency, "deploy.ratio_concurrency"
    elif sustainable is not None:
        c, rule = sustainable, f"highest level with p99 <= {p99_target_ms:g} ms"
    else:  # nothing met the target: compare at the lowest level, and say so
        c, rule = min(r["concurrency"] for r in levels), f"no level met p99 <= {p99_target_ms:g} ms: lowest level"
    at = next(r for r in levels if r["concurrency"] == c)
    out: dict[str, Any] = {
        "ratio_concurrency": c,
        "ratio_concurrency_rule": rule,
        "sustainable_concurrency": sustainable,
        "throughput_per_pod_rps": at["throughput_rps"],
        "bare_throughput_rps": bare_rps,
        "server_over_bare": round(at["throughput_rps"] / bare_rps, 3) if bare_rps else None,
        "p99_ms_at_ratio": at["p99_ms"],
        "p99_target_ms": p99_target_ms,
        "best_throughput_rps": max(r["throughput_rps"] for r in levels),
    }
    gains = []
    for nb in nobatch:
        on = next((r for r in levels if r["concurrency"] == nb["concurrency"]), None)
        if on and nb["throughput_rps"]:
            gains.append(
                {"concurrency": nb["concurrency"], "batching_rps": on["throughput_rps"],
                 "nobatch_rps": nb["throughput_rps"], "ratio": round(on["throughput_rps"] / nb["throughput_rps"], 3),
                 "p99_batching_ms": on["p99_ms"], "p99_nobatch_ms": nb["p99_ms"],
                 "mean_batch_size": on.get("mean_batch_size")}
            )  # fmt: skip
    out["batching_gain"] = gains
    g = next((x for x in gains if x["concurrency"] == c), None)
    out["batching_over_nobatch"] = g["ratio"] if g else None
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
    concurrency level (on and off interleaved, each sweep stopping once saturated), the bare-model ceiling before and
    after, the goals judged, graceful stop.

    Args:
        model_dir: serving model dir.
        texts: request texts (real test texts).
        serve: the `serve` params section as a dict.
        deploy: DeployParams (levels, durations, targets, goals).
        work_dir: server logs and params files.
        progress: show a tqdm bar over the runs.

    Returns:
        The report (what reports/serve.json holds).
    """
    from kit.serve.model import OnnxTextClassifier, read_model_dir

    t0 = time.perf_counter()
    d = deploy
    meta = read_model_dir(model_dir, int(serve.get("max_length", 64)))
    threads = int(serve["threads"])
    work_dir = Path(work_dir)
    # Other work on the machine competes with the server; the load averages make that visible in the report.
    load_before = os.getloadavg()[0]
    servers: dict[str, ServerHandle] = {}
    replicas: list[ServerHandle] = []
    cores = core_sets(threads, d.replica_threads) if d.replica_threads else None
    report: dict[str, Any] = {}
    try:
        servers["batching"] = start_server(
            model_dir, serve, work_dir, "batching", d.startup_timeout_s, probe_text=texts[0]
        )
        servers["nobatch"] = start_server(
            model_dir, {**serve, "max_batch_size": 1}, work_dir, "nobatch", d.startup_timeout_s, probe_text=texts[0]
        )
        if cores:
            replicas = start_replicas(model_dir, serve, work_dir, cores, d.startup_timeout_s, texts[0])
        smoke = smoke_test(servers["batching"].url, texts, meta.labels)
        # The bare model in the server's session: same threads, same spinning.
        bare_model = OnnxTextClassifier(meta, threads, spinning=bool(serve.get("ort_spinning", False)))
        runs, sweep = _run_plan(servers, replicas, bare_model, texts, serve, d, progress)
        grace = float(serve.get("graceful_timeout_s", 30)) + 10
        stops = {k: stop_server(h, timeout_s=grace) for k, h in servers.items()}
        stops |= {h.label: stop_server(h, timeout_s=grace) for h in replicas}
    finally:
        for h in [*servers.values(), *replicas]:
            if h.proc.poll() is None:
                stop_server(h, timeout_s=10)
    report["model"] = {
        "dir": str(model_dir),
        "variant": meta.variant,
        "version": meta.version,
        "size_mib": round((Path(model_dir) / "model.onnx").stat().st_size / 2**20, 2),
        "max_length": meta.max_length,
    }
    report["config"] = _config_section(serve, d, len(texts), load_before, sweep)
    report["smoke_test"] = smoke
    report["cold_start"] = {
        "ready_s": round(servers["batching"].ready_s, 3),
        "first_request_ms": round(servers["batching"].first_request_ms, 2),
        "nobatch_ready_s": round(servers["nobatch"].ready_s, 3),
    }
    report["shutdown"] = stops
    levels, nobatch = runs["batching"], runs["nobatch"]
    report["levels"], report["nobatch_levels"] = levels, nobatch
    report["bare"] = bare_section(runs["bare"])
    report.update(summarize(levels, nobatch, report["bare"]["throughput_rps"], d.ratio_concurrency, d.p99_target_ms))
    report["replicas"] = (
        replicas_section(runs["replicas"], levels, cores, report["bare_throughput_rps"], d.p99_target_ms)
        if cores
        else None
    )
    report["goals"] = judge_goals(report, d)
    report["targets"] = {g["name"]: g["met"] for g in report["goals"]}
    # The HTTP cost alone: the max-batch-1 server against the bare model at batch size 1.
    unbatched = report["bare"]["unbatched"]["throughput_rps"]
    nb = next((r for r in nobatch if r["concurrency"] == report["ratio_concurrency"]), None)
    report["nobatch_over_bare_unbatched"] = round(nb["throughput_rps"] / unbatched, 3) if nb and unbatched else None
    report["config"]["loadtest_s"] = round(time.perf_counter() - t0, 1)
    return report


def _nobatch_levels(deploy: Any) -> list[int]:
    return list(deploy.nobatch_levels if deploy.nobatch_levels is not None else deploy.concurrency_levels)


def _replica_levels(deploy: Any) -> list[int]:
    if deploy.replica_levels is not None:
        return list(deploy.replica_levels)
    return [deploy.goal_gain_concurrency] if deploy.goal_gain_concurrency in deploy.concurrency_levels else []


def _run_plan(
    servers: dict[str, ServerHandle],
    replicas: list[ServerHandle],
    model: Any,
    texts: list[str],
    serve: dict[str, Any],
    deploy: Any,
    progress: bool,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The bare-model grid, then each level on both servers and, at deploy.replica_levels, on the replicas (which
    goes first alternates, so drift hits both sides of a ratio alike), then the bare grid again. Above
    deploy.sweep_full_up_to a server's sweep stops once saturated (never before a replica level).

    Returns:
        The rows by kind ("batching", "nobatch": load_level rows; "replicas": load_replicas rows; "bare":
        bare_benchmark runs), and the sweep's record: where each sweep stopped and which levels it skipped.
    """
    from tqdm import tqdm

    d = deploy
    bs, threads = int(serve["max_batch_size"]), int(serve["threads"])
    nobatch_levels = set(_nobatch_levels(d))
    replica_levels = set(_replica_levels(d)) if replicas else set()
    required = {c for c in d.concurrency_levels if c <= d.sweep_full_up_to} | {d.ratio_concurrency} | replica_levels
    grid = bare_grid(list(d.bare_batch_sizes), bs)
    runs: dict[str, list[dict[str, Any]]] = {"batching": [], "nobatch": [], "replicas": [], "bare": []}
    stopped: dict[str, int | None] = {"batching": None, "nobatch": None}
    skipped: dict[str, list[int]] = {"batching": [], "nobatch": []}
    total = 2 * len(grid) + len(d.concurrency_levels) + len(nobatch_levels) + len(replica_levels)
    bar = tqdm(total=total, desc="load test", disable=not progress, file=sys.stderr)

    def bare_pass() -> None:
        for b, bucket in grid:
            bar.set_postfix_str(f"bare b={b}{' buckets' if bucket else ''}")
            runs["bare"].append(bare_benchmark("", texts, b, threads, d.bare_seconds, model=model, bucketing=bucket))
            bar.update()

    bare_pass()
    for i, c in enumerate(sorted(d.concurrency_levels)):
        kinds = ["batching", "nobatch"] if c in nobatch_levels else ["batching"]
        kinds += ["replicas"] if c in replica_levels else []
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            bar.update()
            if kind == "replicas":
                bar.set_postfix_str(f"{len(replicas)} replicas c={c}")
                runs["replicas"].append(load_replicas(replicas, texts, c, d.duration_s, d.warmup_s))
                continue
            if stopped[kind] is not None and c not in required:
                skipped[kind].append(c)
                continue
            bar.set_postfix_str(f"{kind} c={c}")
            h = servers[kind]
            row = load_level(h.url, texts, c, d.duration_s, d.warmup_s, h.pid, d.sample_interval_s)
            row["batching"] = kind == "batching"
            runs[kind].append(row)
            if stopped[kind] is None and c >= d.sweep_full_up_to and saturated(runs[kind], d.saturation_tolerance):
                stopped[kind] = c
    bare_pass()
    bar.close()
    sweep = {"stopped_at": stopped, "skipped": skipped,
             "rule": f"above {d.sweep_full_up_to} clients a sweep stops once a level adds at most "
                     f"{d.saturation_tolerance:.0%} throughput while p99 rises"}  # fmt: skip
    return runs, sweep


# The serve settings that shape a run's speed, recorded with the figures they produced.
_SHAPING = ("max_batch_size", "max_delay_ms", "batch_wait", "threads", "ort_spinning")


def _config_section(
    serve: dict[str, Any], deploy: Any, n_texts: int, load_before: float, sweep: dict[str, Any]
) -> dict[str, Any]:
    """What was measured with: the serve settings that shape batching, the plan, and the machine's load."""
    import psutil

    d = deploy
    return {
        "serve": {k: serve[k] for k in _SHAPING if k in serve},
        "concurrency_levels": list(d.concurrency_levels),
        "nobatch_levels": _nobatch_levels(d),
        "sweep": sweep,
        "duration_s": d.duration_s,
        "warmup_s": d.warmup_s,
        "bare_seconds": d.bare_seconds,
        "replica_threads": d.replica_threads,
        "replica_levels": _replica_levels(d),
        "texts": n_texts,
        "cpu_count": psutil.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "client": "closed loop: one asyncio event loop, one keep-alive HTTP/1.1 connection per client, on the same "
        "machine as the server; each request carries one text",
    }


def texts_from_parquet(path: str | Path, column: str = "text", max_texts: int = 2000, seed: int = 0) -> list[str]:
    """Up to `max_texts` texts from a Parquet split, in a seeded random order (so the sample spans the file)."""
    import pyarrow.parquet as pq

    from kit.core.errors import DataError

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
