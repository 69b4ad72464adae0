"""Benchmark and evaluate model variants side by side: latency percentiles, throughput, memory, GFLOP/s, accuracy.
Variants are interleaved round by round so machine drift hits all alike; ratios are taken within each round (`kit bench`)."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import DataError, KitError
from kit.core.io import rel_path
from kit.optimize.export import find_tokenizer
from kit.optimize.runners import Runner, load_runner, peak_mb, read_texts, reset_peak, rss_mb, trim
from kit.serve.model import encode, load_tokenizer

__all__ = [
    "machine_peak",
    "benchmark",
    "evaluate",
    "bench_models",
]


# ------------------------------------------------------------------------------------------------ machine
def _cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": set(), "mhz": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            info["model"] = m.group(1).strip()
        if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            info["flags"] = set(m.group(1).split())
        if m := re.search(r"^cpu MHz\s*:\s*([\d.]+)$", text, re.M):
            info["mhz"] = float(m.group(1))
    except OSError:
        pass
    try:  # lscpu reports the rated maximum when the hypervisor exposes it; prefer it over the current clock.
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        if m := re.search(r"^CPU max MHz:\s*([\d.]+)$", out, re.M):
            info["mhz_max"] = float(m.group(1))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_peak(threads: int, measure: bool = True) -> dict[str, Any]:
    """The fp32 peak the benchmark's GFLOP/s are compared with, derived two ways.

    Theoretical: threads x clock x FLOPs/cycle, with FLOPs/cycle = 2 FMA units x SIMD fp32 lanes x 2 (AVX-512: 16
    lanes, AVX2+FMA: 8, AVX: 8 without FMA so x1, SSE: 4), clock from lscpu's max MHz or /proc/cpuinfo.
    Measured: best of a few 1024x1024 fp32 matmuls in torch on the same threads (what a tuned GEMM reaches here).

    Returns:
        {"threads", "cpu", "theoretical_gflops", "theoretical_derivation", "measured_gflops", "measured_derivation"}.
    """
    info = _cpu_info()
    flags = info["flags"]
    if "avx512f" in flags:
        lanes, fma, isa = 16, 2, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, fma, isa = 8, 2, "AVX2+FMA"
    elif "avx" in flags:
        lanes, fma, isa = 8, 1, "AVX"
    else:
        lanes, fma, isa = 4, 1, "SSE"
    units = 2  # two SIMD FP pipes per core on every x86 core of the last decade
    per_cycle = units * lanes * fma
    mhz = info.get("mhz_max") or info.get("mhz")
    out: dict[str, Any] = {"threads": threads, "cpu": info["model"], "isa": isa}
    if mhz:
        out["theoretical_gflops"] = threads * mhz / 1000 * per_cycle
        out["theoretical_derivation"] = (
            f"{threads} cores x {mhz / 1000:.3f} GHz ({'lscpu max' if info.get('mhz_max') else '/proc/cpuinfo'}) x "
            f"{per_cycle} fp32 FLOPs/cycle ({units} units x {lanes} lanes x {fma} for {isa})"
        )
    else:
        out["theoretical_gflops"] = None
        out["theoretical_derivation"] = "clock unknown (no /proc/cpuinfo MHz)"
    if measure:
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        best = math.inf
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        torch.set_num_threads(prev)
        out["measured_gflops"] = 2 * n**3 / best / 1e9
        out["measured_derivation"] = f"best of 5 torch fp32 {n}x{n} matmuls on {threads} threads"
    return out


# ---------------------------------------------------------------------------------------------- benchmark
def _batches(tok: Any, texts: Sequence[str], batch_size: int, seq_len: int, count: int) -> list[dict[str, np.ndarray]]:
    # Consecutive slices of the real texts (wrapping around), each padded/truncated to exactly seq_len tokens, so
    # every variant times the same inputs of the nominal shape.
    out = []
    n = len(texts)
    for i in range(count):
        start = (i * batch_size) % n
        rows = [texts[(start + j) % n] for j in range(batch_size)]
        out.append(encode(tok, rows, pad_to=seq_len))
    return out


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def benchmark(
    runners: list[Runner],
    tokenizer: Any,
    texts: Sequence[str],
    batch_sizes: Sequence[int],
    seq_lengths: Sequence[int],
    warmup: int = 2,
    repeats: int = 10,
    rounds: int = 3,
    threads: int = 2,
    reference: str | None = None,
    progress: bool = True,
    measure_peak: bool = True,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Time every runner on the same real, tokenized texts, interleaved round by round.

    In each round, for each (batch size, length), each runner does `warmup` untimed calls then `repeats` timed ones.
    Latency percentiles pool all rounds; speed ratios over the reference are computed per round (same round, same
    inputs) and their median reported, which cancels most machine drift.

    Args:
        runners: loaded models (same thread count).
        tokenizer: a tokenizers.Tokenizer shared by all runners.
        texts: real texts to draw batches from.
        batch_sizes, seq_lengths: the grid.
        warmup, repeats, rounds: see above.
        threads: recorded (the runners were created with it).
        reference: runner name the ratios are over (default: the first PyTorch runner, else the first runner).
        progress: show a tqdm bar.
        measure_peak: also measure the machine's fp32 peak for GFLOP/s utilisation.
        root: project root; model paths in the results are written relative to it (None: as given).

    Returns:
        {"machine", "settings", "reference", "results": [per runner x batch x length], "rounds": raw medians}.
    """
    from tqdm import tqdm

    if not runners:
        raise KitError("nothing to benchmark")
    if not texts:
        raise DataError("no texts to benchmark on")
    if reference is None:
        reference = next((r.name for r in runners if r.kind == "pytorch"), runners[0].name)
    if reference not in {r.name for r in runners}:
        raise KitError(f"reference {reference!r} is not among the runners {[r.name for r in runners]}")
    names = [r.name for r in runners]
    if len(set(names)) != len(names):
        raise KitError(f"runner names must be unique, got {names}")
    peak = machine_peak(threads, measure=measure_peak)
    grid = [(b, s) for s in seq_lengths for b in batch_sizes]
    inputs = {(b, s): _batches(tokenizer, texts, b, s, warmup + repeats) for b, s in grid}
    lat: dict[tuple[str, int, int], list[float]] = {(r.name, b, s): [] for r in runners for b, s in grid}
    round_med: dict[tuple[str, int, int], list[float]] = {k: [] for k in lat}
    extra_mem: dict[tuple[str, int, int], float] = {k: 0.0 for k in lat}
    can_reset = reset_peak()
    bar = tqdm(total=rounds * len(grid) * len(runners), desc="benchmark", unit="run", disable=not progress)
    for rnd in range(rounds):
        # Rotate the order each round so no variant always runs right after the same neighbour.
        order = runners[rnd % len(runners) :] + runners[: rnd % len(runners)]
        for b, s in grid:
            batches = inputs[(b, s)]
            for r in order:
                bar.set_postfix_str(f"round {rnd + 1}/{rounds} {r.name} b{b} s{s}")
                # Peak memory is measured from before the warm-up: ORT grows its arena on the first large batch.
                trim()
                base = rss_mb()
                if can_reset:
                    reset_peak()
                for x in batches[:warmup]:
                    r(x)
                times = []
                for x in batches[warmup:]:
                    t = time.perf_counter()
                    r(x)
                    times.append(time.perf_counter() - t)
                if can_reset and (pk := peak_mb()) is not None:
                    extra_mem[(r.name, b, s)] = max(extra_mem[(r.name, b, s)], pk - base)
                lat[(r.name, b, s)].extend(times)
                round_med[(r.name, b, s)].append(statistics.median(times))
                bar.update(1)
    bar.close()

    results = []
    for r in runners:
        for b, s in grid:
            k = (r.name, b, s)
            xs = lat[k]
            med = statistics.median(xs)
            ratios = [ref / mine for ref, mine in zip(round_med[(reference, b, s)], round_med[k])]
            flops = r.spec.flops(b, s) if r.spec else None
            gflops = flops / med / 1e9 if flops else None
            row = {
                "variant": r.name,
                "kind": r.kind,
                "path": rel_path(r.path, root) if root else str(r.path),
                "size_mb": round(r.size_bytes / 2**20, 3),
                "batch_size": b,
                "seq_len": s,
                "samples": len(xs),
                "latency_ms": {
                    "p50": 1000 * med,
                    "p95": 1000 * _pct(xs, 95),
                    "p99": 1000 * _pct(xs, 99),
                    "mean": 1000 * statistics.fmean(xs),
                    "min": 1000 * min(xs),
                },
                "throughput_seq_s": b / med,
                "speedup": statistics.median(ratios),
                "speedup_per_round": ratios,
                "load_rss_mb": round(r.load_rss_mb, 1),
                "run_peak_extra_mb": round(extra_mem[k], 1) if can_reset else None,
                "peak_mem_mb": round(r.load_rss_mb + extra_mem[k], 1) if can_reset else None,
                "gflop_per_forward": flops / 1e9 if flops else None,
                "gflops": gflops,
                "pct_theoretical_peak": 100 * gflops / peak["theoretical_gflops"]
                if gflops and peak.get("theoretical_gflops")
                else None,
                "pct_measured_peak": 100 * gflops / peak["measured_gflops"]
                if gflops and peak.get("measured_gflops")
                else None,
            }
            results.append(row)
    return {
        "machine": {**peak, "platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {
            "batch_sizes": list(batch_sizes),
            "seq_lengths": list(seq_lengths),
            "warmup": warmup,
            "repeats": repeats,
            "rounds": rounds,
            "threads": threads,
            "texts": len(texts),
            "memory_method": "RSS the model added when loaded and run once (load_rss_mb) + the largest peak-RSS "
            "growth over rounds during its warm-up and timed calls (VmHWM reset per run via /proc/self/clear_refs, "
            "freed heap returned to the OS with malloc_trim first)"
            if can_reset
            else "unavailable on this OS",
            "gflops_method": "analytic fp32-equivalent FLOPs of the encoder (2 per multiply-add) / median latency; "
            "INT8 variants do the same work in integer ops",
        },
        "reference": reference,
        "results": results,
        "rounds": {f"{n}|b{b}|s{s}": [1000 * x for x in v] for (n, b, s), v in round_med.items()},
    }


# ----------------------------------------------------------------------------------------------- accuracy
def evaluate(
    runners: list[Runner],
    tokenizer: Any,
    texts: Sequence[str],
    labels: np.ndarray,
    batch_size: int = 64,
    reference: str | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Accuracy, macro-F1 and agreement with the reference's predictions for every runner on all texts.

    Texts are sorted by length and padded per batch (same predictions as one by one, much faster).

    Returns:
        {runner name: {"accuracy", "macro_f1", "agreement", "rows"}}.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from tqdm import tqdm

    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    if reference is None:
        reference = next((r.name for r in runners if r.kind == "pytorch"), runners[0].name)
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    preds: dict[str, np.ndarray] = {}
    for r in runners:
        out = np.empty(len(texts), dtype=np.int64)
        for idx in tqdm(batches, desc=f"accuracy {r.name}", unit="batch", disable=not progress):
            out[idx] = r(encode(tokenizer, [texts[i] for i in idx])).argmax(axis=1)
        preds[r.name] = out
    ref = preds[reference]
    present = sorted(set(labels.tolist()))
    return {
        name: {
            "accuracy": float(accuracy_score(labels, p)),
            "macro_f1": float(f1_score(labels, p, average="macro", labels=present, zero_division=0)),
            "agreement": float((p == ref).mean()),
            "rows": len(labels),
        }
        for name, p in preds.items()
    }


# ------------------------------------------------------------------------------------------- kit bench
def bench_models(
    models: Sequence[str | Path],
    texts_path: str | Path,
    out: str | Path,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    seq_lengths: Sequence[int] = (64,),
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 10,
    rounds: int = 5,
    tokenizer: str | Path | None = None,
    max_rows: int | None = None,
    accuracy: bool = True,
    text_column: str = "text",
    label_column: str = "label_id",
    max_length: int = 512,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark any PyTorch model directories and ONNX models side by side and write the JSON report.

    Args:
        models: HF model directories, .onnx files or directories holding model.onnx; the first PyTorch one (else the
            first) is the reference for ratios.
        texts_path: Parquet/CSV with a text column (and a label id column for accuracy).
        out: the JSON report to write.
        batch_sizes, seq_lengths, threads, warmup, repeats, rounds: see `benchmark`.
        tokenizer: tokenizer.json (default: found beside the first model).
        max_rows: use only the first rows of the file.
        accuracy: also compute accuracy/macro-F1/agreement when labels exist.
        text_column, label_column: columns to read.
        max_length: truncation for the accuracy pass.

    Returns:
        The report: {"benchmark": ..., "accuracy": ... or None, "models": [...]}.
    """
    from kit.core.io import write_json

    if not models:
        raise KitError("give at least one model directory or .onnx file")
    texts, labels = read_texts(texts_path, text_column, label_column)
    if max_rows:
        texts = texts[:max_rows]
        labels = labels[:max_rows] if labels is not None else None
    tok_path = Path(tokenizer) if tokenizer else None
    if tok_path is None:
        for m in models:
            try:
                tok_path = find_tokenizer(m)
                break
            except KitError:
                continue
    if tok_path is None:
        raise KitError(f"no tokenizer.json beside any of {[str(m) for m in models]}; pass --tokenizer")
    tok = load_tokenizer(tok_path, max_length)
    runners: list[Runner] = []
    for m in models:
        r = load_runner(m, threads)
        taken = {x.name for x in runners}
        base, i = r.name, 2
        while r.name in taken:
            r.name, i = f"{base}_{i}", i + 1
        runners.append(r)
    acc = None
    if accuracy and labels is not None:
        acc = evaluate(runners, tok, texts, labels, progress=progress)
    bench = benchmark(
        runners, tok, texts, batch_sizes, seq_lengths, warmup=warmup, repeats=repeats, rounds=rounds,
        threads=threads, progress=progress,
    )
    report = {
        "models": [{"name": r.name, "kind": r.kind, "path": str(r.path)} for r in runners],
        "tokenizer": str(tok_path),
        "texts": str(texts_path),
        "accuracy": acc,
        "benchmark": bench,
    }
    write_json(out, report)
    return report
