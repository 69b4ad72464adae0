"""Sizing of the model server's pods from the load test: requests, limits, startup budget, per-pod concurrency.
Measured figures (reports/serve.json) times deploy.headroom, or the params defaults when no load test ran."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kit.core.params import Params
from kit.core.reports import ServeReport

__all__ = ["Sizing", "size_from_report"]


@dataclass(frozen=True)
class Sizing:
    """Resources and timings the manifests use, with where each came from."""

    cpu_request_m: int
    cpu_limit_m: int
    memory_request_mib: int
    memory_limit_mib: int
    startup_failure_threshold: int
    startup_period_s: int
    concurrency_target: int
    source: str  # "measured (reports/serve.json)" or "defaults (deploy.default_*)"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round_up(x: float, step: int) -> int:
    return int(math.ceil(x / step) * step)


def size_from_report(params: Params, report: ServeReport | None) -> Sizing:
    """Requests, limits, startup budget and per-pod concurrency from the load test, with headroom.

    Args:
        params: validated params (deploy and serve sections are read).
        report: reports/serve.json as read by read_report, or None when no load test ran (defaults from params are used).

    Returns:
        The sizing; `notes` says which figure drove each value.
    """
    d, s = params.deploy, params.serve
    limit_cores = d.cpu_limit_cores or float(s.threads)
    limit_m = _round_up(limit_cores * 1000, 50)
    rss = report.resources.rss_peak_mib if report else None
    cpu = report.resources.cpu_peak_cores if report else None
    notes: list[str] = []
    if rss and cpu:
        source = "measured (reports/serve.json)"
        mem_req = max(d.min_memory_mib, _round_up(rss * d.headroom, 16))
        # The server cannot use more cores than its intra-op threads, so the request never exceeds the limit.
        cpu_req = min(limit_m, max(100, _round_up(cpu * d.headroom * 1000, 50)))
        notes.append(f"memory request = peak RSS {rss:.0f} MiB x headroom {d.headroom}")
        notes.append(f"cpu request = peak {cpu:.2f} cores x headroom {d.headroom}, capped at the limit")
    else:
        source = "defaults (deploy.default_cpu_cores, deploy.default_memory_mib)"
        mem_req = max(d.min_memory_mib, d.default_memory_mib)
        cpu_req = min(limit_m, _round_up(d.default_cpu_cores * 1000, 50))
        notes.append("no load-test measurement: params defaults")
    period = 2
    cold = report.cold_start.ready_s if report else None
    budget = max(float(d.startup_budget_s), (cold or 0.0) * d.headroom)
    if cold:
        notes.append(f"startup budget = max(deploy.startup_budget_s, cold start {cold:.1f}s x headroom)")
    # Per-pod concurrency the autoscalers aim at: the most concurrent clients one server took within the p99 target.
    target = (report.sustainable_concurrency if report else None) or max(d.concurrency_levels)
    return Sizing(
        cpu_request_m=cpu_req,
        cpu_limit_m=max(limit_m, cpu_req),
        memory_request_mib=mem_req,
        memory_limit_mib=_round_up(mem_req * d.memory_limit_factor, 16),
        startup_failure_threshold=int(math.ceil(budget / period)),
        startup_period_s=period,
        concurrency_target=target,
        source=source,
        notes=notes,
    )
