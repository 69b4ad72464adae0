"""Benchmark and evaluate model variants side by side: latency percentiles, throughput, memory, GFLOP/s, accuracy.
Variants are interleaved round by round so machine drift hits all alike; ratios are taken within each round (`kit bench`)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import DataError, KitError
from kit.core.io import rel_path
from kit.optimize.export import find_tokenizer
from kit.optimize.machine import machine_peak
from kit.optimize.runners import Runner, gc_frozen, load_runner, peak_mb, read_texts, reset_peak, rss_mb, trim
from kit.serve.model import encode, load_tokenizer

__all__ = [
    "benchmark",
    "evaluate",
    "bench_models",
]


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


def _check_runners(runners: list[Runner], texts: Sequence[str], reference: str | None) -> str:
    """The reference runner's name (default: the first PyTorch runner, else the first); checks names and texts."""
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
    return reference


def _time_runner(
    r: Runner,
    batches: list[dict[str, np.ndarray]],
    warmup: int,
    can_reset: bool,
    settle_s: float = 0.0,
    min_turn_s: float = 0.0,
) -> tuple[list[float], float | None]:
    """One runner's turn: a `settle_s` pause, `warmup` untimed calls, then one timed call per remaining batch, going
    round those batches again until the timed calls add up to `min_turn_s`.

    Returns:
        (seconds per timed call, peak RSS growth in MB over the turn or None where it cannot be measured).
    """
    # Spinning ORT threads of the runner before keep a core busy for tens of ms after its last call; timed
    # against them, a batch-1 run came out 1.3-1.5x slower in some rounds and not in others.
    time.sleep(settle_s)
    # Peak memory is measured from before the warm-up: ORT grows its arena on the first large batch.
    trim()
    base = rss_mb()
    if can_reset:
        reset_peak()
    for x in batches[:warmup]:
        r(x)
    times: list[float] = []
    timed = batches[warmup:]
    # A 1 ms call timed 10 times spans 10 ms, which one scheduling hiccup of the machine can fill: short calls are
    # repeated until the turn is long enough that its median no longer hangs on such a burst.
    while len(times) < len(timed) or sum(times) < min_turn_s:
        x = timed[len(times) % len(timed)]
        t = time.perf_counter()
        r(x)
        times.append(time.perf_counter() - t)
    pk = peak_mb() if can_reset else None
    return times, (pk - base if pk is not None else None)


def _result_row(
    r: Runner,
    b: int,
    s: int,
    xs: list[float],
    ratios: list[float],
    extra_mb: float | None,
    peak: dict[str, Any],
    root: str | Path | None,
) -> dict[str, Any]:
    """One runner x batch x length: latency percentiles, throughput, ratio over the reference, memory, GFLOP/s."""
    med = statistics.median(xs)
    flops = r.spec.flops(b, s) if r.spec else None
    gflops = flops / med / 1e9 if flops else None
    theoretical, measured = peak.get("theoretical_gflops"), peak.get("measured_gflops")
    return {
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
        "run_peak_extra_mb": round(extra_mb, 1) if extra_mb is not None else None,
        "peak_mem_mb": round(r.load_rss_mb + extra_mb, 1) if extra_mb is not None else None,
        "gflop_per_forward": flops / 1e9 if flops else None,
        "gflops": gflops,
        "pct_theoretical_peak": 100 * gflops / theoretical if gflops and theoretical else None,
        "pct_measured_peak": 100 * gflops / measured if gflops and measured else None,
    }


def _spread(round_med: dict[tuple[str, int, int], list[float]], reference: str) -> float:
    """The largest relative spread, (max - min) / median, of any runner's per-round speed ratios over the reference."""
    worst = 0.0
    for (name, b, s), mine in round_med.items():
        if name != reference and mine:
            ratios = [ref / m for ref, m in zip(round_med[(reference, b, s)], mine, strict=True)]
            worst = max(worst, (max(ratios) - min(ratios)) / statistics.median(ratios))
    return worst


def _rounds(
    runners: list[Runner], inputs: dict[tuple[int, int], list[dict[str, np.ndarray]]], plan: dict[str, Any], bar: Any
) -> tuple[dict[str, Any], int, float | None]:
    """Run interleaved rounds until `plan` says stop: at least min_rounds, then until every ratio's spread is within
    ratio_spread (None: never), at most max_rounds. Returns ({"lat", "round_med", "extra_mem"}, rounds, spread)."""
    keys = [(r.name, b, s) for r in runners for b, s in inputs]
    acc: dict[str, Any] = {"lat": {k: [] for k in keys}, "round_med": {k: [] for k in keys}}
    acc["extra_mem"] = {k: 0.0 for k in keys}
    can_reset, spread, rnd = plan["can_reset"], None, 0
    while rnd < plan["max_rounds"]:
        # Rotate the order each round so no variant always runs right after the same neighbour.
        order = runners[rnd % len(runners) :] + runners[: rnd % len(runners)]
        for b, s in inputs:
            for r in order:
                bar.set_postfix_str(f"round {rnd + 1} {r.name} b{b} s{s}", refresh=False)
                times, extra = _time_runner(
                    r, inputs[(b, s)], plan["warmup"], can_reset, plan["settle_s"], plan["min_turn_s"]
                )
                if extra is not None:
                    acc["extra_mem"][(r.name, b, s)] = max(acc["extra_mem"][(r.name, b, s)], extra)
                acc["lat"][(r.name, b, s)].extend(times)
                acc["round_med"][(r.name, b, s)].append(statistics.median(times))
                bar.update(1)
        rnd += 1
        spread = _spread(acc["round_med"], plan["reference"])
        if rnd >= plan["min_rounds"] and plan["ratio_spread"] is not None and spread <= plan["ratio_spread"]:
            break
    return acc, rnd, spread


def benchmark(
    runners: list[Runner],
    tokenizer: Any,
    texts: Sequence[str],
    batch_sizes: Sequence[int],
    seq_lengths: Sequence[int],
    *,
    warmup: int = 2,
    repeats: int = 10,
    rounds: int = 3,
    min_rounds: int | None = None,
    ratio_spread: float | None = None,
    settle_s: float = 0.0,
    min_turn_s: float = 0.0,
    threads: int = 2,
    reference: str | None = None,
    progress: bool = True,
    measure_peak: bool = True,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Time every runner on the same real, tokenized texts, interleaved round by round.

    In each round, for each (batch size, length), each runner does `warmup` untimed calls then `repeats` timed ones.
    Latency percentiles pool all rounds; speed ratios over the reference are computed per round (same round, same
    inputs) and their median reported, which cancels most machine drift. Rounds stop early once the ratios agree.

    Args:
        runners: loaded models (same thread count).
        tokenizer: a tokenizers.Tokenizer shared by all runners.
        texts: real texts to draw batches from.
        batch_sizes, seq_lengths: the grid.
        warmup, repeats: see above.
        rounds: the most rounds run.
        min_rounds: rounds always run (None: `rounds`, a fixed count; capped at `rounds`).
        ratio_spread: after min_rounds, stop once every runner's per-round ratios lie within this fraction of their
            median ((max - min) / median); None: run all `rounds`.
        settle_s: pause before each runner's turn (spinning threads of the runner before go to sleep).
        min_turn_s: a turn's timed calls add up to at least this (short calls repeat beyond `repeats`).
        threads: recorded (the runners were created with it).
        reference: runner name the ratios are over (default: the first PyTorch runner, else the first runner).
        progress: show a progress bar.
        measure_peak: also measure the machine's fp32 peak for GFLOP/s utilisation.
        root: project root; model paths in the results are written relative to it (None: as given).

    Returns:
        {"machine", "settings", "reference", "results": [per runner x batch x length], "rounds": raw medians}.
    """
    from kit.core.progress import progress as progress_bar

    reference = _check_runners(runners, texts, reference)
    peak = machine_peak(threads, measure=measure_peak)
    inputs = {(b, s): _batches(tokenizer, texts, b, s, warmup + repeats) for s in seq_lengths for b in batch_sizes}
    low = min(min_rounds or rounds, rounds)
    plan = {"max_rounds": rounds, "min_rounds": low, "ratio_spread": ratio_spread, "warmup": warmup}
    plan |= {"settle_s": settle_s, "min_turn_s": min_turn_s, "reference": reference, "can_reset": reset_peak()}
    bar = progress_bar(total=rounds * len(inputs) * len(runners), desc="benchmark", unit="run", disable=not progress)
    with gc_frozen():
        acc, done, spread = _rounds(runners, inputs, plan, bar)
    bar.total = bar.n  # stopped early: the bar ends full, not at the share of the most rounds
    bar.close()
    results = []
    for r in runners:
        for b, s in inputs:
            k = (r.name, b, s)
            ratios = [
                ref / mine for ref, mine in zip(acc["round_med"][(reference, b, s)], acc["round_med"][k], strict=True)
            ]
            extra = acc["extra_mem"][k] if plan["can_reset"] else None
            results.append(_result_row(r, b, s, acc["lat"][k], ratios, extra, peak, root))
    return {
        "machine": {**peak, "platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": _settings(batch_sizes, seq_lengths, warmup, repeats, plan, done, spread, threads, len(texts)),
        "reference": reference,
        "results": results,
        "rounds": {f"{n}|b{b}|s{s}": [1000 * x for x in v] for (n, b, s), v in acc["round_med"].items()},
    }


def _settings(
    batch_sizes: Sequence[int],
    seq_lengths: Sequence[int],
    warmup: int,
    repeats: int,
    plan: dict[str, Any],
    done: int,
    spread: float | None,
    threads: int,
    n_texts: int,
) -> dict[str, Any]:
    """The benchmark's settings as reported: the grid, calls, rounds run (and the stopping rule), methods."""
    return {
        "batch_sizes": list(batch_sizes),
        "seq_lengths": list(seq_lengths),
        "warmup": warmup,
        "repeats": repeats,
        "rounds": done,
        "min_rounds": plan["min_rounds"],
        "max_rounds": plan["max_rounds"],
        "ratio_spread_target": plan["ratio_spread"],
        "ratio_spread": spread,
        "settle_s": plan["settle_s"],
        "min_turn_s": plan["min_turn_s"],
        "threads": threads,
        "texts": n_texts,
        "memory_method": "RSS the model added when loaded and run once (load_rss_mb) + the largest peak-RSS "
        "growth over rounds during its warm-up and timed calls (VmHWM reset per run via /proc/self/clear_refs, "
        "freed heap returned to the OS with malloc_trim first)"
        if plan["can_reset"]
        else "unavailable on this OS",
        "gflops_method": "analytic fp32-equivalent FLOPs of the encoder (2 per multiply-add) / median latency; "
        "INT8 variants do the same work in integer ops",
    }


# ----------------------------------------------------------------------------------------------- accuracy
def evaluate(
    runners: list[Runner],
    tokenizer: Any,
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    batch_size: int = 64,
    reference: str | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Accuracy, macro-F1 and agreement with the reference's predictions for every runner on all texts.

    Texts are sorted by length, tokenised once into batches padded to their longest (same predictions as one by
    one, much faster), and every runner predicts the same batches.

    Returns:
        {runner name: {"accuracy", "macro_f1", "agreement", "rows"}}.
    """
    from sklearn.metrics import accuracy_score, f1_score

    from kit.core.progress import progress as progress_bar

    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    if reference is None:
        reference = next((r.name for r in runners if r.kind == "pytorch"), runners[0].name)
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    encoded = [encode(tokenizer, [texts[i] for i in idx]) for idx in batches]
    preds: dict[str, np.ndarray] = {}
    for r in runners:
        out = np.empty(len(texts), dtype=np.int64)
        bar = progress_bar(zip(batches, encoded, strict=True), total=len(batches), desc=f"accuracy {r.name}",
                           unit="batch", disable=not progress)  # fmt: skip
        for idx, x in bar:
            out[idx] = r(x).argmax(axis=1)
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
    with gc_frozen():  # each load trims twice: scan the libraries' objects once, not every time
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
        runners,
        tok,
        texts,
        batch_sizes,
        seq_lengths,
        warmup=warmup,
        repeats=repeats,
        rounds=rounds,
        threads=threads,
        progress=progress,
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
