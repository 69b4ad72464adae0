"""Embedding drift on pooled sentence embeddings: unbiased MMD^2 with an RBF kernel, vectorised numpy.
The bandwidth (median heuristic) and the reference's own kernel mean are fixed once from the reference sample."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kit.monitor.features import MonitorError

__all__ = ["MMDReference", "mmd2", "median_bandwidth", "mmd_cost_per_1000"]


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise MonitorError(f"{what}: embeddings must be a 2-D array with at least 2 rows, got shape {arr.shape}")
    return arr


def _kernel(a: np.ndarray, b: np.ndarray, gamma: float, a_sq: np.ndarray | None = None) -> np.ndarray:
    """RBF kernel matrix exp(-gamma |a-b|^2), computed in place from one matrix product (the window's hot path)."""
    # |a-b|^2 = |a|^2 + |b|^2 - 2ab; clip the tiny negatives rounding leaves before the exponential.
    k = a @ b.T
    k *= -2.0
    k += (a * a).sum(1)[:, None] if a_sq is None else a_sq[:, None]
    k += (b * b).sum(1)[None, :]
    np.maximum(k, 0.0, out=k)
    k *= -gamma
    return np.exp(k, out=k)


def _mean_offdiag(k: np.ndarray) -> float:
    n = k.shape[0]
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def median_bandwidth(x: np.ndarray, *, max_rows: int = 1000, seed: int = 0) -> float:
    """The median heuristic: the median pairwise Euclidean distance within (a seeded subsample of) `x`."""
    x = _as_2d(x, "reference")
    if x.shape[0] > max_rows:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_rows, replace=False)]
    sq = (x * x).sum(1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)[np.triu_indices(x.shape[0], k=1)]
    sigma = float(np.sqrt(np.median(d)))
    if not sigma > 0:
        raise MonitorError("reference embeddings are all identical: no bandwidth for the RBF kernel")
    return sigma


@dataclass(frozen=True)
class MMDReference:
    """A reference embedding sample with what every window reuses: the RBF bandwidth and the mean k(x, x')."""

    x: np.ndarray
    bandwidth: float
    kxx_mean: float
    x_sq: np.ndarray  # squared row norms of x, reused by every window

    @property
    def gamma(self) -> float:
        """The RBF kernel's 1 / (2 sigma^2)."""
        return 1.0 / (2 * self.bandwidth**2)

    @classmethod
    def fit(cls, x: np.ndarray, *, bandwidth: float | None = None) -> MMDReference:
        """Fix the bandwidth (median heuristic unless given) and the reference kernel mean from `x`."""
        x = _as_2d(x, "reference")
        sigma = bandwidth if bandwidth is not None else median_bandwidth(x)
        kxx = _mean_offdiag(_kernel(x, x, 1.0 / (2 * sigma**2)))
        return cls(x=x, bandwidth=sigma, kxx_mean=kxx, x_sq=(x * x).sum(1))


def mmd2(reference: MMDReference, current: np.ndarray) -> float:
    """Unbiased MMD^2 between the reference sample and a window's embeddings (0 in expectation without drift).

    Args:
        reference: the fitted reference.
        current: the window's pooled embeddings, shape (rows, dim).

    Returns:
        MMD^2; larger means the window's embeddings lie further from the reference's.
    """
    y = _as_2d(current, "window")
    if y.shape[1] != reference.x.shape[1]:
        raise MonitorError(f"window embeddings have dim {y.shape[1]}, the reference's have {reference.x.shape[1]}")
    kyy = _mean_offdiag(_kernel(y, y, reference.gamma))
    kxy = float(_kernel(reference.x, y, reference.gamma, reference.x_sq).mean())
    return reference.kxx_mean + kyy - 2.0 * kxy


def mmd_cost_per_1000(
    reference: MMDReference, embeddings: np.ndarray, *, window_size: int = 200, repeats: int = 5
) -> float:
    """Seconds of MMD^2 per 1,000 texts, measured by timing `repeats` windows cut from `embeddings`.

    Args:
        reference: the fitted reference.
        embeddings: rows to cut windows from (at least `window_size`).
        window_size: rows per window, as the monitor runs it.
        repeats: how many windows to time (the median window time is used).

    Returns:
        Median seconds per window scaled to 1,000 texts.
    """
    y = _as_2d(embeddings, "window")
    if y.shape[0] < window_size:
        raise MonitorError(f"need at least {window_size} embedding rows to time a window, got {y.shape[0]}")
    times = []
    for i in range(repeats):
        start = (i * window_size) % (y.shape[0] - window_size + 1)
        t0 = time.perf_counter()
        mmd2(reference, y[start : start + window_size])
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0 / window_size
