"""The options billed only for work done: a serverless function (per request + GB-seconds, its cold starts) and a
nightly batch Job over the day's volume (cheap, but a prediction waits up to a day)."""

from __future__ import annotations

import math

import numpy as np

from kit.cost.options import OptionCost, Setup

__all__ = ["serverless", "batch_job", "function_cold_share"]


def function_cold_share(rates: np.ndarray, keepalive_s: float) -> float:
    """Share of requests that find no warm function instance.

    A request is cold when no request came in the `keepalive_s` before it; with Poisson arrivals at rate r that is
    exp(-r x keepalive). Scale-out colds (a second concurrent instance) are left out: they are rare while the
    concurrency stays near 1, as it does for millisecond requests."""
    rates = np.asarray(rates, dtype=float)
    if rates.sum() <= 0:
        return 0.0
    return float((rates * np.exp(-rates * keepalive_s)).sum() / rates.sum())


def serverless(s: Setup) -> OptionCost:
    """The function option: one request per instance at a time, CPU share set by the memory size."""
    st, fn, t = s.settings, s.function, s.settings.traffic
    # The benchmark's batch-1 latency on the pod's vCPUs, slowed by the function's smaller CPU share (linear).
    duration_ms = s.cap.unbatched_ms * t.texts_per_request * s.cap.pod_vcpus / fn.vcpu
    billed_s = math.ceil(duration_ms) / 1000.0  # billed per millisecond, rounded up
    requests = t.requests_per_day * st.hours_per_month / 24.0
    gb_s = requests * billed_s * fn.memory_mb / 1024.0
    free_req = fn.free_requests_per_month if st.apply_free_tier else 0.0
    free_gbs = fn.free_gb_s_per_month if st.apply_free_tier else 0.0
    monthly = (
        max(0.0, requests - free_req) * fn.usd_per_million_requests / 1e6 + max(0.0, gb_s - free_gbs) * fn.usd_per_gb_s
    )
    cold = function_cold_share(s.rates, st.function_keepalive_s)
    cold_ms = (st.function_init_s + s.cap.cold_start_s) * 1000 + duration_ms
    p99 = cold_ms if cold > 0.01 else duration_ms
    concurrency = max(1, math.ceil(float(s.rates.max()) * t.burst * duration_ms / 1000.0))
    notes = [
        f"{duration_ms:.1f} ms per request on {fn.vcpu:g} vCPU (bench p50 at batch 1, scaled by vCPUs)",
        "free tier " + ("applied" if st.apply_free_tier else "not applied (per account)"),
    ]
    return s.option(
        "serverless",
        monthly,
        replicas_at_peak=concurrency,
        idle_share=0.0,
        p99_ms=p99,
        p99_holds=p99 <= t.p99_objective_ms,
        cold_share=cold,
        cold_latency_ms=cold_ms,
        notes=notes,
    )


def batch_job(s: Setup) -> OptionCost:
    """A nightly Job: the day's texts at the benchmark's batch rate on pods of the measured size, on on-demand."""
    st, t = s.settings, s.settings.traffic
    texts = t.requests_per_day * t.texts_per_request
    pod_rate = s.cap.batch_texts_per_s_per_vcpu * s.cap.pod_vcpus
    work_h = texts / pod_rate / 3600.0
    pods = max(1, math.ceil(work_h / st.batch_window_h))  # spread over more pods when one cannot finish in time
    run_h = work_h / pods + st.batch_start_s / 3600.0
    monthly = pods * run_h * s.pod_hour_usd * st.hours_per_month / 24.0
    p99 = 0.99 * 86_400_000.0  # a request waits for the next run: up to a day
    notes = [f"{work_h * 60:.1f} pod-minutes of work a day at {pod_rate:.0f} texts/s per pod"]
    return s.option(
        "batch",
        monthly,
        replicas_at_peak=pods,
        idle_share=(st.batch_start_s / 3600.0) / run_h,
        p99_ms=p99,
        p99_holds=p99 <= t.p99_objective_ms,
        notes=notes,
    )
