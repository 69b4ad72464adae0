"""Closed-form M/M/c (Erlang C) waiting figures: the yardstick the discrete-event simulation is checked against.
Also the Young/Daly checkpoint interval and the expected run time under exponential interruptions."""

from __future__ import annotations

import math

__all__ = ["erlang_c", "mmc_mean_wait", "mmc_wait_quantile", "young_daly_interval", "expected_runtime"]


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability an arrival waits in an M/M/c queue (Erlang C), for `offered_load` = lambda / mu < `servers`.

    Computed through the Erlang B recursion, which stays stable for many servers."""
    if offered_load >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    rho = offered_load / servers
    return b / (1 - rho + rho * b)


def mmc_mean_wait(servers: int, arrival_rate: float, service_rate: float) -> float:
    """Mean time in queue (before service) of an M/M/c queue, in the rates' time unit."""
    a = arrival_rate / service_rate
    if a >= servers:
        return math.inf
    return erlang_c(servers, a) / (servers * service_rate - arrival_rate)


def mmc_wait_quantile(servers: int, arrival_rate: float, service_rate: float, q: float) -> float:
    """The q-quantile of the queueing wait: P(W > t) = C * exp(-(c mu - lambda) t), so 0 when C <= 1 - q."""
    a = arrival_rate / service_rate
    c = erlang_c(servers, a)
    if c <= 1 - q:
        return 0.0
    return math.log(c / (1 - q)) / (servers * service_rate - arrival_rate)


def young_daly_interval(write_s: float, mtbf_s: float) -> float:
    """Young/Daly optimal compute time between checkpoints: sqrt(2 x write time x MTBF)."""
    return math.sqrt(2.0 * write_s * mtbf_s)


def expected_runtime(work_s: float, *, interval_s: float, write_s: float, mtbf_s: float, restart_s: float) -> float:
    """Expected wall time of `work_s` of compute checkpointed every `interval_s`, under exponential interruptions.

    Daly (2006): each segment of interval + write costs M e^(R/M) (e^((tau + C)/M) - 1) in expectation, where a
    failure loses the segment's progress and pays the restart R. With no failures (MTBF inf) it is work + writes."""
    segments = work_s / interval_s
    if math.isinf(mtbf_s):
        return work_s + max(math.ceil(segments) - 1, 0) * write_s
    per_segment = mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((interval_s + write_s) / mtbf_s)
    return segments * per_segment
