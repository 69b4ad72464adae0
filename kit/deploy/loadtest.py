"""Load-test plan and results for `kit serve`: micro-batching on vs off across concurrency levels, cold start, and the
bare-model ceiling on the same texts, summarized into what reports/serve.json holds (plots: kit.deploy.plots)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kit.deploy.loadclient import load_level, pct
from kit.deploy.servers import ServerHandle, smoke_test, start_server, stop_server

__all__ = ["bare_benchmark", "summarize", "run_loadtest", "texts_from_parquet"]


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
    from kit.serve.model import OnnxTextClassifier, read_model_dir

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
        "batch_p50_ms": pct(ms, 50),
        "batch_p99_ms": pct(ms, 99),
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
    from kit.serve.model import OnnxTextClassifier, read_model_dir

    d = deploy
    meta = read_model_dir(model_dir, int(serve.get("max_length", 64)))
    threads = int(serve["threads"])
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
        runs = _run_plan(servers, OnnxTextClassifier(meta, threads), model_dir, texts, serve, d, progress)
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
    report["config"] = _config_section(serve, d, len(texts), load_before)
    report["smoke_test"] = smoke
    report["cold_start"] = {
        "ready_s": round(servers["batching"].ready_s, 3),
        "first_request_ms": round(servers["batching"].first_request_ms, 2),
        "nobatch_ready_s": round(servers["nobatch"].ready_s, 3),
    }
    report["shutdown"] = stops
    levels, nobatch = runs["batching"], runs["nobatch"]
    report["levels"], report["nobatch_levels"] = levels, nobatch
    report.update(summarize(levels, nobatch, runs["bare"], d.ratio_concurrency, d.p99_target_ms))
    report["bare"] = _bare_section(runs["bare"], runs["bare1"], int(serve["max_batch_size"]))
    # Each text padded alone costs less than in a batch padded to its longest text; whether batching can pay at all
    # on this machine shows in the bare-model ratio of the two, and the HTTP cost in nobatch server / bare unbatched.
    unbatched = report["bare"]["unbatched"]["throughput_rps"]
    nb = next((r for r in nobatch if r["concurrency"] == report["ratio_concurrency"]), None)
    report["nobatch_over_bare_unbatched"] = round(nb["throughput_rps"] / unbatched, 3) if nb and unbatched else None
    return report


def _nobatch_levels(deploy: Any) -> list[int]:
    return list(deploy.nobatch_levels if deploy.nobatch_levels is not None else deploy.concurrency_levels)


def _run_plan(
    servers: dict[str, ServerHandle],
    model: Any,
    model_dir: str | Path,
    texts: list[str],
    serve: dict[str, Any],
    deploy: Any,
    progress: bool,
) -> dict[str, list[dict[str, Any]]]:
    """Bare model, then each level on the batching server and (where listed) the max-batch-1 one, then bare again.

    Returns:
        The rows by kind: "batching", "nobatch" (load_level rows), "bare", "bare1" (bare_benchmark runs at
        serve.max_batch_size and at batch size 1).
    """
    from tqdm import tqdm

    d = deploy
    bs, threads = int(serve["max_batch_size"]), int(serve["threads"])
    nobatch_levels = _nobatch_levels(d)
    plan: list[tuple[str, int | None]] = [("bare", None)]
    for c in d.concurrency_levels:
        plan.append(("batching", c))
        if c in nobatch_levels:
            plan.append(("nobatch", c))
    plan.append(("bare", None))
    runs: dict[str, list[dict[str, Any]]] = {"batching": [], "nobatch": [], "bare": [], "bare1": []}
    bar = tqdm(plan, desc="load test", disable=not progress, file=sys.stderr)
    for kind, c in bar:
        bar.set_postfix_str(f"{kind} c={c}" if c else kind)
        if kind == "bare":
            runs["bare"].append(bare_benchmark(model_dir, texts, bs, threads, d.bare_seconds, model=model))
            runs["bare1"].append(bare_benchmark(model_dir, texts, 1, threads, d.bare_seconds / 2, model=model))
            continue
        h = servers[kind]
        row = load_level(h.url, texts, c, d.duration_s, d.warmup_s, h.pid, d.sample_interval_s)
        row["batching"] = kind == "batching"
        runs[kind].append(row)
    return runs


def _config_section(serve: dict[str, Any], deploy: Any, n_texts: int, load_before: float) -> dict[str, Any]:
    """What was measured with: the serve settings that shape batching, the plan, and the machine's load."""
    import psutil

    d = deploy
    return {
        "serve": {k: serve[k] for k in ("max_batch_size", "max_delay_ms", "batch_wait", "threads") if k in serve},
        "concurrency_levels": list(d.concurrency_levels),
        "nobatch_levels": _nobatch_levels(d),
        "duration_s": d.duration_s,
        "warmup_s": d.warmup_s,
        "texts": n_texts,
        "cpu_count": psutil.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "client": "closed loop: one asyncio event loop, one keep-alive HTTP/1.1 connection per client, on the same "
        "machine as the server; each request carries one text",
    }


def _bare_section(bare: list[dict[str, Any]], bare1: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """The bare-model runs at `batch_size` and at batch size 1 (unbatched), each rate beside its batch size."""

    def mean(runs: list[dict[str, Any]]) -> float | None:
        return round(float(np.mean([r["throughput_rps"] for r in runs])), 2) if runs else None

    batched, single = mean(bare), mean(bare1)
    return {
        "batch_size": batch_size,
        "runs": bare,
        "throughput_rps": batched,
        "unbatched": {"batch_size": 1, "runs": bare1, "throughput_rps": single},
        "batch_over_unbatched": round(batched / single, 3) if batched and single else None,
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
