"""The traffic profile: requests per day, a diurnal curve (a shape or a CSV trace), peak factor, burst, p99 objective.
`hourly_rates` turns it into requests per second for each bin of the day, which the options and the simulation use."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.special import i0

from kit.core.params import CostTrafficParams
from kit.cost.errors import CostError

__all__ = ["TrafficProfile", "diurnal_weights", "hourly_rates", "read_trace"]


# The profile is params.yaml's cost.traffic section, one definition with its defaults, bounds and descriptions.
TrafficProfile = CostTrafficParams


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
