"""The traffic profile: requests per day, a diurnal curve (a shape or a CSV trace), peak factor, burst, p99 objective.
`hourly_rates` turns it into requests per second for each bin of the day, which the options and the simulation use."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import brentq
from scipy.special import i0

from kit.cost.errors import CostError

__all__ = ["TrafficProfile", "diurnal_weights", "hourly_rates", "read_trace"]


class TrafficProfile(BaseModel):
    """What the service must carry. `trace` (a CSV with a `weight` column, one row per equal slice of the day)
    replaces the shape; then `peak_factor` is the trace's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_day: float = Field(default=1_000_000, gt=0)
    shape: str = Field(default="diurnal", pattern="^(diurnal|flat)$")
    peak_factor: float = Field(default=3.0, ge=1.0, le=24.0)  # busiest hour's rate over the day's mean rate
    peak_hour: float = Field(default=14.0, ge=0, lt=24)
    burst: float = Field(default=1.5, ge=1.0)  # short spikes over the peak hour's rate that capacity must absorb
    texts_per_request: float = Field(default=1.0, ge=1.0)
    p99_objective_ms: float = Field(default=100.0, gt=0)
    trace: str | None = None


def _von_mises_k(peak_factor: float) -> float:
    """Concentration whose day curve exp(k cos) has max/mean = peak_factor (mean of exp(k cos) is I0(k))."""
    if peak_factor <= 1.0 + 1e-9:
        return 0.0
    return float(brentq(lambda k: math.exp(k) / i0(k) - peak_factor, 1e-9, 700.0))


def diurnal_weights(peak_factor: float, *, peak_hour: float = 14.0, bins: int = 24) -> np.ndarray:
    """Relative rate for each of `bins` equal slices of the day: a smooth single-peaked curve with mean 1.

    A von Mises (circular normal) shape is used because it reaches any peak factor while staying positive."""
    centres = np.arange(bins) * 24.0 / bins  # slice starts: a peak on a slice boundary is hit exactly
    k = _von_mises_k(peak_factor)
    w = np.exp(k * np.cos(2 * np.pi * (centres - peak_hour) / 24.0))
    return w / w.mean()


def read_trace(path: str | Path) -> np.ndarray:
    """A day's relative rate from a CSV trace (column `weight`, one row per equal slice), scaled to mean 1."""
    import pandas as pd  # lazy: only traces need it

    path = Path(path)
    if not path.is_file():
        raise CostError(f"{path}: traffic trace not found")
    frame = pd.read_csv(path)
    if "weight" not in frame.columns:
        raise CostError(f"{path}: traffic trace needs a 'weight' column (has {', '.join(map(str, frame.columns))})")
    w = frame["weight"].to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        raise CostError(f"{path}: row {bad[0] + 1}, column 'weight': must be a number >= 0")
    if w.sum() <= 0:
        raise CostError(f"{path}: column 'weight' sums to 0")
    return w / w.mean()


def hourly_rates(traffic: TrafficProfile) -> np.ndarray:
    """Requests per second in each slice of the day (24 slices unless a trace gives another count)."""
    if traffic.trace:
        w = read_trace(traffic.trace)
    elif traffic.shape == "flat":
        w = np.ones(24)
    else:
        w = diurnal_weights(traffic.peak_factor, peak_hour=traffic.peak_hour)
    return w * traffic.requests_per_day / 86_400.0
