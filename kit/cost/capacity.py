"""Capacity from the measured reports, never guessed: per-pod throughput at the p99 objective, cold start, batch rate.
Moving to another instance type scales by vCPUs (an assumption, stated with its source); far types get a warning."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from kit.core.reports import BenchReport, ServeReport
from kit.cost.errors import CostError
from kit.cost.prices import InstancePrice

__all__ = [
    "Capacity",
    "measure_capacity",
    "replica_capacity",
    "pods_per_instance",
    "instance_warnings",
    "SCALING_ASSUMPTION",
]

SCALING_ASSUMPTION = (
    "throughput scales linearly with vCPUs by adding pods of the measured size (pods share nothing; Kubernetes "
    "packs them by CPU request), source: reports/serve.json's load test of one pod; not re-measured per instance type"
)


class Capacity(BaseModel):
    """What one pod of the measured size carries, and where each figure came from."""

    model_config = ConfigDict(frozen=True)

    pod_vcpus: int  # the load test's machine: the pod's CPU request
    pod_memory_mib: float  # peak RSS under load
    pod_texts_per_s: float  # highest measured rate whose p99 met the objective
    pod_concurrency: int  # the load level that gave it
    pod_p99_ms: float  # the p99 at that level
    measured_cpu: str
    measured_arch: str
    cold_start_s: float  # process start to ready + first request, as measured (no scheduling or image pull)
    batch_texts_per_s_per_vcpu: float
    unbatched_ms: float  # one text alone (bench p50 at batch 1): the serverless function's per-request time
    sources: dict[str, str]


def _fastest_within(levels: list[dict], objective_ms: float) -> dict | None:
    """The level with the highest throughput whose p99 met the objective (None: none did)."""
    ok = [lv for lv in levels if lv.get("p99_ms") is not None and lv["p99_ms"] <= objective_ms]
    return max(ok, key=lambda lv: lv["throughput_rps"], default=None)


def _best_level(serve: ServeReport, objective_ms: float) -> dict:
    best = _fastest_within(serve.levels, objective_ms)
    if best is None:
        low = min(lv["p99_ms"] for lv in serve.levels)
        raise CostError(
            f"reports/serve.json: levels: no load level met the p99 objective of {objective_ms:g} ms "
            f"(best p99 {low:g} ms): the objective cannot be met by this server"
        )
    return best


def measure_capacity(serve: ServeReport, bench: BenchReport, *, p99_objective_ms: float) -> Capacity:
    """Per-pod capacity at the p99 objective from the load test, cold start from it, batch rate from the benchmark.

    Args:
        serve: reports/serve.json (its `levels` are the batching load levels, one text per request).
        bench: reports/bench.json (headline throughput at the largest batch on `benchmark.machine.cpus`).
        p99_objective_ms: the latency objective a level must meet to count.

    Returns:
        The pod's figures with the report field each came from.
    """
    level = _best_level(serve, p99_objective_ms)
    vcpus = serve.config.cpu_count or serve.config.serve.threads
    bench_cpus = int(bench.benchmark.get("machine", {}).get("cpus") or bench.benchmark["settings"]["threads"])
    cold = serve.cold_start.ready_s + serve.cold_start.first_request_ms / 1000.0
    memory = serve.resources.rss_peak_mib or max(lv.get("server_rss_peak_mib", 0.0) for lv in serve.levels)
    return Capacity(
        pod_vcpus=int(vcpus),
        pod_memory_mib=float(memory),
        pod_texts_per_s=float(level["throughput_rps"]),
        pod_concurrency=int(level["concurrency"]),
        pod_p99_ms=float(level["p99_ms"]),
        measured_cpu=str(bench.benchmark.get("machine", {}).get("cpu", "unknown")),
        measured_arch="x86_64",  # the kit's benchmarks run on x86_64 (ISA recorded in bench.json's machine)
        cold_start_s=cold,
        batch_texts_per_s_per_vcpu=bench.headline.throughput_seq_s / bench_cpus,
        unbatched_ms=bench.headline.p50_latency_ms,
        sources={
            "pod_texts_per_s": f"reports/serve.json levels[concurrency={level['concurrency']}].throughput_rps "
            f"(highest with p99 <= {p99_objective_ms:g} ms)",
            "pod_vcpus": "reports/serve.json config.cpu_count",
            "pod_memory_mib": "reports/serve.json resources.rss_peak_mib",
            "cold_start_s": "reports/serve.json cold_start.ready_s + first_request_ms",
            "batch_texts_per_s_per_vcpu": f"reports/bench.json headline.throughput_seq_s / {bench_cpus} cpus "
            f"(batch {bench.headline.throughput_batch_size})",
            "unbatched_ms": "reports/bench.json headline.p50_latency_ms (batch 1)",
            "scaling": SCALING_ASSUMPTION,
        },
    )


def replica_capacity(serve: ServeReport, cap: Capacity, *, p99_objective_ms: float) -> Capacity | None:
    """What one pod of the smaller size carries, from the load test's replica arm: the same cores split into pinned
    servers (serve.json `replicas`), at its fastest level within the p99 objective, chosen as `measure_capacity`
    chooses the larger pod's. None when the arm was not measured or no level of it met the objective.

    Args:
        serve: reports/serve.json.
        cap: the measured pod (`measure_capacity`): memory, cold start and batch figures carry over.
        p99_objective_ms: the latency objective a level must meet to count.
    """
    rep = serve.replicas
    level = _fastest_within(rep.levels, p99_objective_ms) if rep is not None else None
    if rep is None or level is None:
        return None
    return cap.model_copy(
        update={
            "pod_vcpus": rep.threads_per_replica,
            "pod_texts_per_s": level["throughput_rps"] / rep.replicas,
            "pod_concurrency": max(1, level["concurrency"] // rep.replicas),
            "pod_p99_ms": float(level["p99_ms"]),
            "sources": cap.sources
            | {
                "pod_texts_per_s": f"reports/serve.json replicas.levels[concurrency={level['concurrency']}]"
                f".throughput_rps / {rep.replicas} replicas (each pinned to {rep.threads_per_replica} core(s); "
                f"highest with p99 <= {p99_objective_ms:g} ms)",
                "pod_vcpus": "reports/serve.json replicas.threads_per_replica",
                "pod_memory_mib": "reports/serve.json resources.rss_peak_mib (the larger pod's: an upper bound)",
            },
        }
    )


def pods_per_instance(cap: Capacity, inst: InstancePrice) -> int:
    """Pods of the measured size that fit one instance (CPU-bound, then memory with 10% for the node's own use)."""
    by_cpu = inst.vcpu // cap.pod_vcpus
    by_mem = math.floor(inst.memory_gib * 1024 * 0.9 / cap.pod_memory_mib)
    fits = min(by_cpu, by_mem)
    if fits < 1:
        raise CostError(
            f"instance {inst.name}: {inst.vcpu} vCPU / {inst.memory_gib:g} GiB cannot hold one pod of "
            f"{cap.pod_vcpus} vCPU / {cap.pod_memory_mib:.0f} MiB (the measured pod)"
        )
    return fits


def instance_warnings(cap: Capacity, inst: InstancePrice) -> list[str]:
    """Why the measured pod may not carry over to `inst`: other CPU architecture, a GPU, or a far vCPU count."""
    out = []
    if inst.arch != cap.measured_arch:
        out.append(
            f"{inst.name} is {inst.arch}, measured on {cap.measured_arch} ({cap.measured_cpu}): throughput not "
            "measured there (INT8 kernels differ by ISA); re-run the deploy stage's load test on it"
        )
    if inst.gpu:
        out.append(f"{inst.name} has {inst.gpu} GPU(s): the figures are CPU-only, the GPU is paid for and unused")
    ratio = inst.vcpu / cap.pod_vcpus
    if ratio > 8 or ratio < 0.5:
        out.append(
            f"{inst.name} has {inst.vcpu} vCPUs, {ratio:.1f}x the measured {cap.pod_vcpus}: linear scaling "
            "is an assumption this far out"
        )
    return out
