"""Length-aware batching for a CPU: a run-cost model cost(batch, padded length) fitted at start-up and from live runs,
and the planner that splits queued texts, sorted by token count, into the batches that cost least in total."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["RunCost", "plan_batches", "calibration_grid", "measure_grid"]


def _features(b: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Columns of the cost model for batch sizes `b` and padded lengths `length` (broadcast together).

    1: the fixed cost of a run (launch, thread wake-up, hand-off) that merging runs saves.
    b: per-row cost independent of length (softmax, copies).
    b*L: the linear layers, per padded token.
    b*L^2: attention, quadratic in the padded length (why padding a short text to a long one costs more than linear).
    b^2*L: what makes a large batch slower per text on a CPU (activations fall out of cache).
    """
    b, length = np.broadcast_arrays(np.asarray(b, np.float64), np.asarray(length, np.float64))
    return np.stack([np.ones_like(b), b, b * length, b * length * length, b * b * length], axis=-1)


# Live runs are grouped by batch size and padded length in cells this many tokens wide; a cell with this many runs or
# more enters a refit as this quantile of its seconds (preemption only ever adds time, so a low quantile is the cost).
_LENGTH_CELL = 8
_MIN_CELL_RUNS = 4
_LIVE_QUANTILE = 0.2


class RunCost:
    """The model's seconds per run as cost(batch, padded length), fitted by non-negative least squares to warm-up runs
    on a grid of sizes and lengths, then refitted with what live runs show.

    Its intercept is the fixed cost of one run: what merging two runs into one saves, so it also bounds how long a
    batch should wait for company (waiting longer costs the queued requests more than the merge can give back). The
    whole surface tells the planner which batch size pays at each length: the bucket's batch size.

    Live runs carry preemption outliers and run slower than the warm-up (the server's HTTP work shares the cores), so
    they enter a refit robustly: grouped by batch size and length, each group as its low quantile, beside the warm-up
    grid rescaled by the median ratio of live to predicted seconds. Where traffic shows what a size really costs,
    that wins; the grid keeps the sizes traffic never formed covered."""

    def __init__(self, window: int = 512, refit_every: int = 32):
        """Args:
        window: most recent live runs the refit uses (the machine's load changes; old runs stop counting).
        refit_every: live runs between refits (a fit costs about a millisecond; not worth doing per run).
        """
        self._runs: deque[tuple[int, int, float]] = deque(maxlen=window)
        self._refit_every = refit_every
        self._since_fit = 0
        self._grid = np.zeros((0, 3))  # the warm-up runs
        self.coef: np.ndarray | None = None
        self._columns: dict[tuple[int, int], np.ndarray] = {}  # planner's look-ups, valid until the next fit

    def calibrate(self, runs: Iterable[tuple[int, int, float]]) -> None:
        """Fit to (texts, padded length, seconds) of warm-up runs (nothing when they have one batch size only)."""
        self._grid = np.array(list(runs), dtype=np.float64).reshape(-1, 3)
        self._use(_fit_surface(self._grid))

    def add(self, n: int, length: int, seconds: float) -> None:
        """Record one live model run of `n` texts padded to `length` tokens; refits every `refit_every` runs."""
        self._runs.append((n, length, seconds))
        self._since_fit += 1
        if self._since_fit >= self._refit_every:
            self._since_fit = 0
            self._refit()

    def _use(self, coef: np.ndarray | None) -> None:
        if coef is not None:
            self.coef = coef
            self._columns.clear()

    def _refit(self) -> None:
        live = np.array(self._runs, dtype=np.float64).reshape(-1, 3)
        grid = self._grid
        if self.coef is not None and len(grid):  # the grid at the live runs' speed
            predicted = _features(live[:, 0], live[:, 1]) @ self.coef
            ok = predicted > 0
            if ok.any():
                factor = float(np.median(live[ok, 2] / predicted[ok]))
                grid = np.column_stack([grid[:, :2], grid[:, 2] * factor])
        rows = _cells(live)
        # A cell counts as many warm-up points as it has runs: evidence from traffic outweighs the one-off grid.
        weights = np.concatenate([np.ones(len(grid)), rows[:, 3]])
        self._use(_fit_surface(np.vstack([grid, rows[:, :3]]), weights))

    @property
    def overhead_s(self) -> float | None:
        """Fixed cost of one model run in seconds (None before a fit with two batch sizes or more)."""
        return None if self.coef is None else float(self.coef[0])

    def seconds(self, n: np.ndarray | int, length: np.ndarray | int) -> np.ndarray:
        """Predicted seconds of runs of `n` texts padded to `length` (broadcast); 0 before any fit.

        Unfitted, every run costs nothing extra per text, so the planner fills batches by arrival as before."""
        if self.coef is None:
            return np.zeros(np.broadcast_shapes(np.shape(n), np.shape(length)))
        return _features(np.asarray(n), np.asarray(length)) @ self.coef

    def column(self, length: int, max_batch_size: int) -> np.ndarray:
        """Predicted seconds of 0..max_batch_size texts padded to `length` (index = texts), cached until the next fit:
        the planner looks these up for every queued item of every batch."""
        col = self._columns.get((length, max_batch_size))
        if col is None:
            col = np.concatenate([[0.0], self.seconds(np.arange(1, max_batch_size + 1), length)])
            self._columns[length, max_batch_size] = col
        return col

    def best_batch_size(self, length: int, max_batch_size: int) -> int:
        """The batch size with the least predicted seconds per text at one padded length: the bucket's batch size."""
        sizes = np.arange(1, max_batch_size + 1)
        if self.coef is None:
            return max_batch_size
        per_text = self.seconds(sizes, length) / sizes
        return int(sizes[np.flatnonzero(per_text <= per_text.min() * (1 + 1e-9))[-1]])


def _cells(live: np.ndarray) -> np.ndarray:
    """Live (texts, padded length, seconds) runs grouped by texts and length cell: per cell of `_MIN_CELL_RUNS` runs or
    more, (texts, mean length, low quantile of seconds, runs). Vectorised: it runs on the event loop."""
    key = live[:, 0].astype(np.int64) * 65536 + live[:, 1].astype(np.int64) // _LENGTH_CELL
    order = np.lexsort((live[:, 2], key))
    live, key = live[order], key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    low = starts + np.floor(_LIVE_QUANTILE * (counts - 1)).astype(np.int64)  # seconds sorted within each cell
    rows = np.column_stack([live[starts, 0], np.add.reduceat(live[:, 1], starts) / counts, live[low, 2], counts])
    return rows[counts >= _MIN_CELL_RUNS]


def _fit_surface(pts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | None:
    """NNLS fit of (texts, padded length, seconds) rows in relative error (a 2 ms run counts as much as a 200 ms one),
    each row weighted by `weights` (default 1); None when the rows have one batch size only (the fixed cost cannot be
    told from the per-text cost)."""
    keep = pts[:, 2] > 0
    pts = pts[keep]
    if len(pts) < 2 or np.ptp(pts[:, 0]) == 0:
        return None
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=np.float64)[keep]
    row = np.sqrt(w) / pts[:, 2]
    x = _features(pts[:, 0], pts[:, 1]) * row[:, None]
    scale = x.max(axis=0)  # columns of very different magnitude: scaled, so the solve is well conditioned
    scale[scale == 0] = 1.0
    return _nnls(x / scale, pts[:, 2] * row) / scale


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares, exact by trying every subset of columns (five columns: 31 small solves).

    scipy.optimize.nnls would do, but importing scipy costs the server seconds of cold start."""
    full, *_ = np.linalg.lstsq(x, y, rcond=None)
    if np.all(full >= 0):  # the unconstrained optimum is feasible, so it is the answer
        return full
    k = x.shape[1]
    best, best_err = np.zeros(k), float(np.sum(y * y))
    for mask in range(1, 2**k):
        cols = [c for c in range(k) if mask >> c & 1]
        coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if np.all(coef >= 0):
            err = float(np.sum((x[:, cols] @ coef - y) ** 2))
            if err < best_err:
                best, best_err = np.zeros(k), err
                best[cols] = coef
    return best


def calibration_grid(max_batch_size: int, max_length: int) -> list[tuple[int, int]]:
    """(batch size, padded length) of the warm-up runs: enough sizes and lengths to fit every column of the model,
    few enough to keep the cold start short. The largest batch at full length is left out when a smaller size at
    full length and the largest at half length already pin the large-batch term: alone it would cost about as much
    as the rest of the grid."""
    sizes = sorted({1, min(4, max_batch_size), min(16, max_batch_size), max_batch_size})
    lengths = sorted({min(16, max_length), max(2, max_length // 2), max_length})
    grid = [(b, n) for b in sizes for n in lengths]
    if len(sizes) > 2 and len(lengths) > 2:
        grid.remove((max_batch_size, max_length))
    return grid


def measure_grid(
    run: Callable[[list[Any]], Any],
    filler: Callable[[int, int], list[Any]],
    grid: list[tuple[int, int]],
    repeats: int = 2,
) -> list[tuple[int, int, float]]:
    """Warm a model up and time it at each (batch size, padded length) of `grid` (call in the model's thread).

    Args:
        run: one model run on a list of units.
        filler: (texts, tokens) -> that many units of exactly that many tokens.
        grid: from `calibration_grid`.
        repeats: timed passes over the grid; the fastest run of each point counts (a run another process
            preempted is slow for reasons the model does not have; whole passes spread a burst over the grid).

    Returns:
        (texts, padded length, seconds) per grid point: RunCost.calibrate's input.
    """
    for b in sorted({b for b, _ in grid}):  # first runs allocate arenas and pick kernels: untimed
        run(filler(b, max(n for s, n in grid if s == b)))
    best = dict.fromkeys(grid, float("inf"))
    for _ in range(repeats):
        for b, length in grid:
            units = filler(b, length)
            t = time.perf_counter()
            run(units)
            best[b, length] = min(best[b, length], time.perf_counter() - t)
    return [(b, length, s) for (b, length), s in best.items()]


def plan_batches(lengths: np.ndarray, sizes: np.ndarray, max_batch_size: int, cost: RunCost) -> list[np.ndarray]:
    """Split queued work into batches of similar length with the least total predicted cost.

    Each queued item (a request's texts, or a chunk of a large request) has a padded length (its longest text) and a
    size in texts; an item is never split. Sorted by length (ties keep queue order), each batch is a run of
    neighbours padded to its longest: the optimal split is a shortest path over the sorted order, where a batch
    ending at item j holding k texts costs cost(k, length of j). A batch pays its fixed cost once; a long text in a
    batch of short ones pays padding for every row: the fit decides which wins at each length, so each length bucket
    gets its own batch size.

    Args:
        lengths: padded length (tokens) of each queued item, in queue order (oldest first).
        sizes: texts in each item (each at most `max_batch_size`).
        max_batch_size: most texts per batch.
        cost: the fitted run-cost model; unfitted, items are packed in queue order (the plain micro-batcher).

    Returns:
        Batches as arrays of indices into `lengths`, each in queue order; the batches ordered by their oldest item.
    """
    n = len(lengths)
    if n == 0:
        return []
    sizes = np.asarray(sizes, dtype=np.int64)
    if cost.coef is None:
        return _pack_in_order(sizes, max_batch_size)
    order = np.argsort(lengths, kind="stable")
    sorted_len, cum = np.asarray(lengths)[order], np.concatenate([[0], np.cumsum(sizes[order])])
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    lows = np.searchsorted(cum, cum[1:] - max_batch_size, side="left")  # first item a batch ending at j may start at
    for j in range(1, n + 1):
        lo = int(lows[j - 1])
        total = best[lo:j] + cost.column(int(sorted_len[j - 1]), max_batch_size)[cum[j] - cum[lo:j]]
        k = int(np.argmin(total))
        best[j], start[j] = total[k], lo + k
    batches = []
    j = n
    while j > 0:
        batches.append(np.sort(order[start[j] : j]))
        j = int(start[j])
    batches.sort(key=lambda idx: int(idx[0]))
    return batches


def _pack_in_order(sizes: np.ndarray, max_batch_size: int) -> list[np.ndarray]:
    """Queue order, each batch filled until the next item would not fit (it opens the next batch)."""
    batches: list[list[int]] = [[]]
    filled = 0
    for i, k in enumerate(sizes.tolist()):
        if batches[-1] and filled + k > max_batch_size:
            batches.append([])
            filled = 0
        batches[-1].append(i)
        filled += k
    return [np.array(b, dtype=np.int64) for b in batches]
