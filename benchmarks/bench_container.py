"""Benchmark: the server image's size, its cold start (podman run -> /readyz 200, median of a few starts: what the cost
stage and the Knative manifest take as cold start), and its throughput against the same server outside the container.
Usage: python benchmarks/bench_container.py [--starts 3] [--rounds 3] [--duration 8] [--concurrency 8]
                                            [--out reports/bench_container.json]

The image is built as tests/test_container.py builds it (local debootstrap base, offline wheels; podman's layer cache
makes a rebuild cheap). Starts run with the test's flags (--read-only --cap-drop ALL --user 10001 --cpus 1). For
throughput both servers run the image's params.yaml (same ORT threads) pinned to the same CPU core (container:
--cpuset-cpus, host process: its affinity), the load client on the other cores; they take turns on the same texts,
order flipped every round, and the ratio is taken within each round so machine drift hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the image helpers live in tests/


class Starts(BaseModel):
    runs_s: list[float] = Field(description="Seconds from start to the first /readyz 200, per start.")
    median_s: float


class Round(BaseModel):
    round: int
    first: str = Field(description="Which server took the load first this round.")
    container_rps: float
    host_rps: float
    ratio: float = Field(description="container_rps / host_rps within the round.")
    container_p50_ms: float | None
    host_p50_ms: float | None
    container_errors: int
    host_errors: int
    container_cpu_cores: float | None = Field(description="The server's CPU-seconds per second over the window.")
    host_cpu_cores: float | None
    cpu_efficiency_ratio: float | None = Field(
        description="Texts per server CPU-second, container / host: the container's own overhead, apart from how "
        "much CPU the scheduler gave each."
    )


class BenchContainer(BaseModel):
    """reports/bench_container.json."""

    machine: dict[str, Any] = Field(description="CPU, ISA and platform, as the optimize benchmark records them.")
    image: dict[str, Any] = Field(description="Tag, size, base and the model baked in.")
    settings: dict[str, Any]
    container_start: Starts = Field(description="podman run -> ready, --cpus 1 (the cold start a pod pays).")
    host_start: Starts = Field(description="The same server as a plain process (no container) -> ready.")
    rounds: list[Round]
    container_rps_median: float
    host_rps_median: float
    ratio_median: float = Field(description="Median over rounds of container/host throughput.")
    cpu_efficiency_median: float | None = Field(description="Median over rounds of cpu_efficiency_ratio.")
    note: str


@contextlib.contextmanager
def _cpu_limit(pid: int, cpus: float) -> Iterator[str]:
    """Put `pid` in its own cgroup-v1 cpu group with a CFS quota of `cpus`, as podman does for --cpus: the same
    limit, and the same group scheduling against the machine's other tasks. Yields what was done."""
    base = Path("/sys/fs/cgroup/cpu")
    group = base / f"kit-bench-host-{pid}"
    try:
        group.mkdir()
        period = int((group / "cpu.cfs_period_us").read_text())
        (group / "cpu.cfs_quota_us").write_text(str(int(period * cpus)))
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:  # cgroup v2 or no rights: pinning alone, and say so
        yield f"no cpu cgroup for the host server ({exc.strerror}): pinning only"
        return
    try:
        yield f"host server in cgroup {group.name} with cpu.cfs_quota_us {int(period * cpus)}/{period}"
    finally:
        if Path(f"/proc/{pid}").exists():
            (base / "cgroup.procs").write_text(str(pid))
        group.rmdir()


def _start_once(image: str, cpus: str) -> float:
    from tests.fixtures_container import Container

    with Container(image, cpus=cpus) as c:
        return round(c.wait_ready(timeout=300), 3)


def _host_server(model_dir: Path, serve: dict[str, Any], log_dir: Path, core: int, label: str):  # -> ServerHandle
    """`python -m kit.serve` pinned to `core` (set before the spawn: ORT's threads inherit it)."""
    from kit.deploy.servers import start_server

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        return start_server(model_dir, serve, log_dir, label=label, cwd=ROOT)
    finally:
        os.sched_setaffinity(0, before)


def _round(r: int, order: list[str], rows: dict[str, dict[str, Any]]) -> Round:
    """One round's figures from load_level's rows."""
    c, h = rows["container"], rows["host"]
    per_cpu = {k: v["throughput_rps"] / v["server_cpu_cores"] if v.get("server_cpu_cores") else None
               for k, v in rows.items()}  # fmt: skip
    eff = per_cpu["container"] / per_cpu["host"] if per_cpu["container"] and per_cpu["host"] else None
    return Round(
        round=r, first=order[0], container_rps=c["throughput_rps"], host_rps=h["throughput_rps"],
        ratio=round(c["throughput_rps"] / h["throughput_rps"], 3) if h["throughput_rps"] else float("nan"),
        container_p50_ms=c["p50_ms"], host_p50_ms=h["p50_ms"], container_errors=c["errors"], host_errors=h["errors"],
        container_cpu_cores=c.get("server_cpu_cores"), host_cpu_cores=h.get("server_cpu_cores"),
        cpu_efficiency_ratio=round(eff, 3) if eff else None,
    )  # fmt: skip


def _throughput(image: str, model_dir: Path, serve: dict[str, Any], texts: list[str], ns: argparse.Namespace,
                core: int, log_dir: Path) -> tuple[list[Round], str]:  # fmt: skip
    """Both servers up on `core`, the load client elsewhere; rounds alternate which goes first."""
    from kit.deploy.loadclient import load_level
    from kit.deploy.servers import stop_server
    from tests.fixtures_container import Container

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores - {core} or cores)
    host = _host_server(model_dir, serve, log_dir, core, "load")
    rounds = []
    try:
        with _cpu_limit(host.pid, 1.0) as how, Container(image, cpus="1", cpuset=str(core)) as ctr:
            ctr.wait_ready(timeout=300)
            pids = {"container": int(ctr.state()["Pid"]), "host": host.pid}
            urls = {"container": ctr.url, "host": host.url}
            for r in range(ns.rounds):
                order = ["container", "host"] if r % 2 == 0 else ["host", "container"]
                rows = {n: load_level(urls[n], texts, ns.concurrency, ns.duration, ns.warmup, server_pid=pids[n])
                        for n in order}  # fmt: skip
                rounds.append(_round(r, order, rows))
                print(f"round {r}: {rounds[-1].model_dump_json()}")
    finally:
        stop_server(host)
        os.sched_setaffinity(0, cores)
    return rounds, how


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=3, help="cold starts of each kind (median reported)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per server per round")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each measurement")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent closed-loop clients (one text a request)")
    ap.add_argument("--texts", default="data/test.parquet", help="request texts (the data stage's test split)")
    ap.add_argument("--model-dir", default="models/serving")
    ap.add_argument("--out", default="reports/bench_container.json")
    ns = ap.parse_args()

    from kit.core.io import write_json
    from kit.core.params import load_params
    from kit.deploy.loadtest import texts_from_parquet
    from kit.deploy.servers import stop_server
    from kit.optimize.machine import machine_peak
    from kit.serve.model import read_model_dir
    from tests.fixtures_container import BASE_TAG, build_image, podman_problem

    if reason := podman_problem():
        print(f"cannot benchmark the image: {reason}", file=sys.stderr)
        return 1
    model_dir = (ROOT / ns.model_dir).resolve()
    serve = load_params(ROOT / "params.yaml").serve
    meta = read_model_dir(model_dir, serve.max_length)
    texts = texts_from_parquet(ROOT / ns.texts, max_texts=2000)
    built = build_image(model_dir)
    print(f"image {built.tag}: {built.size_mb} MB (build {built.build_s:.1f} s)")
    starts = [_start_once(built.tag, "1") for _ in range(ns.starts)]
    print(f"container start-to-ready: {starts}")
    core = max(os.sched_getaffinity(0))  # the servers' core; the load client keeps the others
    with tempfile.TemporaryDirectory(prefix="bench-container-") as tmp:
        host_starts = []
        for k in range(ns.starts):
            h = _host_server(model_dir, serve.model_dump(mode="json"), Path(tmp), core, f"start{k}")
            host_starts.append(round(h.ready_s, 3))
            stop_server(h)
        print(f"host start-to-ready: {host_starts}")
        rounds, how = _throughput(built.tag, model_dir, serve.model_dump(mode="json"), texts, ns, core, Path(tmp))

    report = BenchContainer(
        machine={**machine_peak(serve.threads, measure=False), "platform": platform.platform(), "cpus": os.cpu_count()},
        image={"tag": built.tag, "size_mb": built.size_mb, "model_variant": meta.variant, "model_version": meta.version,
               "base": f"{BASE_TAG} (debootstrap bookworm minbase + python3, standing in for python:3.11-slim-bookworm)"},
        settings={"starts": ns.starts, "rounds": ns.rounds, "duration_s": ns.duration, "warmup_s": ns.warmup,
                  "concurrency": ns.concurrency, "threads": serve.threads, "n_texts": len(texts), "texts": ns.texts,
                  "start_flags": "--read-only --cap-drop ALL --user 10001 --cpus 1 (host starts: pinned to one core)",
                  "throughput_limits": f"both pinned to core {core}; container --cpus 1; {how}"},
        container_start=Starts(runs_s=starts, median_s=statistics.median(starts)),
        host_start=Starts(runs_s=host_starts, median_s=statistics.median(host_starts)),
        rounds=rounds,
        container_rps_median=statistics.median(x.container_rps for x in rounds),
        host_rps_median=statistics.median(x.host_rps for x in rounds),
        ratio_median=statistics.median(x.ratio for x in rounds),
        cpu_efficiency_median=statistics.median(effs) if (effs := [x.cpu_efficiency_ratio for x in rounds
                                                                  if x.cpu_efficiency_ratio]) else None,
        note="Shared 2-core machine with other jobs running: figures are noisy; compare ratios within rounds.",
    )  # fmt: skip
    write_json(ROOT / ns.out, report.model_dump(mode="json"))
    print(f"wrote {ns.out}: container start {report.container_start.median_s:.2f} s (host "
          f"{report.host_start.median_s:.2f} s), throughput ratio {report.ratio_median:.3f}, per CPU-second "
          f"{report.cpu_efficiency_median}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
