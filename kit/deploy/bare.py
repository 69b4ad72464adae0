"""The bare-model ceiling for the load test: the serving model alone on the same texts, over batch sizes with and
without length bucketing, tokenizing each batch as the server does; the best rate is what the server is judged by."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bare_benchmark", "bare_grid", "bare_section"]


def _batches(model: Any, texts: list[str], batch_size: int, bucketing: bool, seed: int = 0) -> list[list[str]]:
    """Consecutive batches of `texts` (in their order, or sorted by token count when bucketing), in a seeded random
    order: a benchmark that stops mid-cycle then sees short and long batches alike."""
    n = len(texts)
    if bucketing:
        lengths = np.array([len(t) for t in model.tokenize(texts)])
        texts = [texts[i] for i in np.argsort(lengths, kind="stable")]
    batches = [[texts[(i + j) % n] for j in range(batch_size)] for i in range(0, max(n, batch_size), batch_size)]
    rng = np.random.default_rng(seed)
    return [batches[i] for i in rng.permutation(len(batches))]


def bare_benchmark(
    model_dir: str | Path,
    texts: list[str],
    batch_size: int,
    threads: int,
    seconds: float,
    max_length: int = 64,
    model: Any = None,
    bucketing: bool = False,
) -> dict[str, Any]:
    """The serving model alone (same tokenizer and ONNX Runtime session as the server): batches of `batch_size` texts
    from `texts`, each tokenized and run as the server runs a micro-batch, for about `seconds`.

    Args:
        model_dir: serving model dir (unused when `model` is given).
        texts: the load test's texts.
        batch_size: texts per run.
        threads: ONNX Runtime intra-op threads.
        seconds: how long to run (at least 3 batches).
        max_length: truncation when the dir has no serving.json.
        model: an OnnxTextClassifier to reuse.
        bucketing: batch texts of similar token length together (as the server's length buckets do).

    Returns:
        texts per second, batches run, median and p99 batch latency (ms), with the configuration.
    """
    from kit.deploy.loadclient import pct
    from kit.serve.model import OnnxTextClassifier, read_model_dir

    model = model or OnnxTextClassifier(read_model_dir(model_dir, max_length), threads)
    batches = _batches(model, texts, batch_size, bucketing)
    model.run_tokens(model.tokenize(batches[0]))  # warm-up: the first run of a shape allocates
    times = []
    done = k = 0
    t_start = time.perf_counter()
    while time.perf_counter() - t_start < seconds or len(times) < 3:
        b = batches[k % len(batches)]
        t = time.perf_counter()
        model.run_tokens(model.tokenize(b))
        times.append(time.perf_counter() - t)
        done += len(b)
        k += 1
    total = time.perf_counter() - t_start
    ms = np.array(times) * 1000
    return {
        "batch_size": batch_size,
        "bucketing": bucketing,
        "threads": threads,
        "batches": len(times),
        "throughput_rps": round(done / total, 2),
        "batch_p50_ms": pct(ms, 50),
        "batch_p99_ms": pct(ms, 99),
    }


def bare_grid(batch_sizes: list[int], max_batch_size: int) -> list[tuple[int, bool]]:
    """(batch size, bucketing) configurations: every size up to the server's limit, with and without bucketing (one
    text per batch needs no bucketing)."""
    sizes = sorted({b for b in batch_sizes if b <= max_batch_size} | {1})
    return [(b, bucket) for b in sizes for bucket in ((False,) if b == 1 else (False, True))]


def bare_section(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ceiling: every configuration's mean rate over its runs (before and after the load), the best of them, and
    batch size 1 (unbatched) beside it.

    Returns:
        The report's `bare` section: batch_size, bucketing, runs and throughput_rps of the best configuration,
        `unbatched` (batch size 1), `batch_over_unbatched`, and `grid` (every configuration).
    """
    grid: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for r in runs:
        grid.setdefault((r["batch_size"], r["bucketing"]), []).append(r)
    rows = [
        {"batch_size": b, "bucketing": bucket, "runs": rs,
         "throughput_rps": round(float(np.mean([r["throughput_rps"] for r in rs])), 2)}
        for (b, bucket), rs in sorted(grid.items())
    ]  # fmt: skip
    best = max(rows, key=lambda r: r["throughput_rps"])
    single = next((r for r in rows if r["batch_size"] == 1), None)
    unbatched = single or {"batch_size": 1, "bucketing": False, "runs": [], "throughput_rps": None}
    ratio = round(best["throughput_rps"] / unbatched["throughput_rps"], 3) if unbatched["throughput_rps"] else None
    return {**best, "unbatched": unbatched, "batch_over_unbatched": ratio, "grid": rows}
