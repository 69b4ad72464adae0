"""The fp32 peak of this machine that benchmark GFLOP/s are compared with: derived from the CPU's clock and SIMD width,
and measured with a tuned matmul on the same threads."""

from __future__ import annotations

import math
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["machine_peak"]


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
