"""The asyncio micro-batcher: groups concurrent requests into one model run, executed in a single worker thread so the
event loop stays free, and waits for company no longer than one run's fixed cost (`RunCost`). The model: kit.serve.model.
A run returns one array, or a tuple of arrays (or None), row-aligned with its texts; each request gets its rows back."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["MicroBatcher", "ModelUnavailable", "RunCost", "Batched", "Rows"]

# What one model run returns for its texts: an array, or several (None for one a model does not produce), row i of
# each belonging to text i. The batcher slices them per request and concatenates the chunks of a split request.
Rows = TypeVar("Rows", np.ndarray, tuple[np.ndarray | None, ...])


class ModelUnavailable(Exception):
    """The batcher cannot take work: the model failed to load, or the server is shutting down."""


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future  # resolves to (rows of these texts, texts in the model run they were part of)


@dataclass(frozen=True)
class Batched(Generic[Rows]):
    """A request's answer: its rows, and the size of the micro-batch its texts ran in (the largest, if split)."""

    rows: Rows
    batch_size: int


def _slice(rows: Rows, start: int, stop: int) -> Rows:
    if isinstance(rows, tuple):
        return tuple(None if r is None else r[start:stop] for r in rows)
    return rows[start:stop]


def _concat(parts: list[Rows]) -> Rows:
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(
            None if first[k] is None else np.concatenate([x for p in parts if (x := p[k]) is not None])
            for k in range(len(first))
        )
    return np.concatenate(parts)


class RunCost:
    """The model's cost per run, t(n) = overhead + per_text * n, fitted by least squares to recent runs.

    The overhead is what merging two runs into one saves, so it bounds how long a batch should wait for company:
    waiting longer than the overhead costs the queued requests more latency than the merge can ever give back (the
    ski-rental argument). A GPU pays milliseconds per launch and waits; a CPU whose batch costs the same per text as
    a single run pays almost nothing and hardly waits."""

    def __init__(self, window: int = 512, refit_every: int = 32):
        """Args:
        window: most recent runs the fit uses (the machine's load changes; old runs stop counting).
        refit_every: runs between refits (a fit costs tens of microseconds; not worth doing per run).
        """
        self._runs: deque[tuple[int, float]] = deque(maxlen=window)
        self._refit_every = refit_every
        self._since_fit = 0
        self._seed: float | None = None
        self._live: float | None = None

    def calibrate(self, runs: Iterable[tuple[int, float]]) -> None:
        """Seed the overhead from (texts, seconds) of warm-up runs of different sizes."""
        self._seed = _intercept(list(runs))

    def add(self, n: int, seconds: float) -> None:
        """Record one live model run; refits every `refit_every` runs."""
        self._runs.append((n, seconds))
        self._since_fit += 1
        if self._since_fit >= self._refit_every:
            self._since_fit = 0
            fitted = _intercept(self._runs)
            if fitted is not None:
                self._live = fitted

    @property
    def overhead_s(self) -> float | None:
        """Fixed cost of one model run in seconds: from live runs once they came in two sizes or more, else from the
        warm-up; None when neither had two sizes."""
        return self._live if self._live is not None else self._seed


def _intercept(runs: Iterable[tuple[int, float]]) -> float | None:
    pts = np.array(list(runs), dtype=np.float64).reshape(-1, 2)
    if len(pts) < 2 or np.ptp(pts[:, 0]) == 0:  # one size only: overhead and per-text cost cannot be told apart
        return None
    _, overhead = np.polyfit(pts[:, 0], pts[:, 1], 1)
    return max(0.0, float(overhead))


_STOP = object()  # ends the worker after everything queued before it
_WAKE = object()  # interrupts a wait for more requests (drain started)


class MicroBatcher(Generic[Rows]):
    """Queue texts from concurrent requests and run them together: up to `max_batch_size` texts per model run, waiting
    at most `max_delay_s` after the first queued request for more. With `wait="adaptive"` the wait is also capped by
    the fixed cost of one model run (`RunCost`), learnt from warm-up and live runs. A request larger than a batch is
    split into chunks. Requests are never split across a failure: if a batch raises, its requests are retried one by
    one so that only the bad one fails."""

    def __init__(
        self,
        max_batch_size: int,
        max_delay_s: float,
        on_batch: Callable[[int, float], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
        wait: str = "adaptive",
        on_wait: Callable[[float], None] | None = None,
    ):
        """Args:
        max_batch_size: most texts per model run.
        max_delay_s: longest wait for a batch to fill.
        on_batch: called with (texts, seconds) after each model run (metrics).
        on_queue: called with the change in queued texts (+n on submit, -n when taken into a batch).
        wait: "fixed" waits up to `max_delay_s` for every batch; "adaptive" waits no longer than one run's overhead.
        on_wait: called with the current wait limit in seconds whenever it changes (metrics).
        """
        if wait not in ("adaptive", "fixed"):
            raise ValueError(f"wait must be 'adaptive' or 'fixed', got {wait!r}")
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.wait = wait
        self.cost = RunCost()
        self._on_wait = on_wait or (lambda s: None)
        self._wait_s = -1.0
        self._on_batch = on_batch or (lambda n, s: None)
        self._on_queue = on_queue or (lambda n: None)
        self._queue: asyncio.Queue = asyncio.Queue()
        # One thread: ONNX Runtime already uses `threads` cores per run; a second concurrent run would only contend.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit-model")
        self._predict: Callable[[list[str]], Rows] | None = None
        self._worker: asyncio.Task | None = None
        self._flush = False
        self._closed = False
        self._error: str | None = None

    def wait_limit_s(self) -> float:
        """How long the next batch may wait for more requests after its first one."""
        overhead = self.cost.overhead_s
        if self.wait == "fixed" or overhead is None:
            return self.max_delay_s
        return min(self.max_delay_s, overhead)

    def start(self, predict: Callable[[list[str]], Rows], calibration: Iterable[tuple[int, float]] = ()) -> None:
        """Begin running queued work with `predict` (call inside the event loop, once the model is warm).

        Args:
            predict: texts -> their rows (probabilities; or a tuple, e.g. with embeddings), run in the worker thread.
            calibration: (texts, seconds) of warm-up runs of different sizes: seeds the run-cost fit.
        """
        self.cost.calibrate(calibration)
        self._predict = predict
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="kit-micro-batcher")

    def fail(self, message: str) -> None:
        """The model will never be available: fail queued and future requests with `message`."""
        self._error = message
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Item):
                self._on_queue(-len(item.texts))
                if not item.future.done():
                    item.future.set_exception(ModelUnavailable(message))

    def flush_now(self) -> None:
        """Stop waiting for batches to fill (shutdown started): run queued work at once."""
        self._flush = True
        self._queue.put_nowait(_WAKE)

    async def submit(self, texts: list[str]) -> Rows:
        """Queue `texts` and wait for their rows (e.g. probabilities [len(texts), num_labels]).

        Raises:
            ModelUnavailable: the model failed to load or the batcher is closed.
        """
        return (await self.submit_batched(texts)).rows

    async def submit_batched(self, texts: list[str]) -> Batched[Rows]:
        """Queue `texts` and wait for their rows and the size of the micro-batch they ran in.

        Raises:
            ModelUnavailable: the model failed to load or the batcher is closed.
        """
        if self._error is not None:
            raise ModelUnavailable(self._error)
        if self._closed:
            raise ModelUnavailable("server is shutting down")
        loop = asyncio.get_running_loop()
        step = self.max_batch_size
        items = [_Item(texts[i : i + step], loop.create_future()) for i in range(0, len(texts), step)]
        for item in items:
            self._queue.put_nowait(item)
        self._on_queue(len(texts))
        if len(items) == 1:
            rows, size = await items[0].future
            return Batched(rows, size)
        done = await asyncio.gather(*(it.future for it in items))
        return Batched(_concat([rows for rows, _ in done]), max(size for _, size in done))

    async def close(self) -> None:
        """Refuse new work, finish everything queued, stop the worker and its thread."""
        self._closed = True
        self._flush = True
        if self._worker is not None and not self._worker.done():
            self._queue.put_nowait(_STOP)
            await self._worker
        self.executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Item | None = None
        stop = False
        while not stop:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            if first is _STOP:
                break
            if first is _WAKE:
                continue
            batch, n = [first], len(first.texts)
            wait = self.wait_limit_s()
            if wait != self._wait_s:
                self._wait_s = wait
                self._on_wait(wait)
            deadline = loop.time() + wait
            while n < self.max_batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if self._flush or timeout <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                if nxt is _STOP:
                    stop = True
                    break
                if nxt is _WAKE:
                    break
                if n + len(nxt.texts) > self.max_batch_size:
                    carry = nxt  # keeps FIFO order: it opens the next batch
                    break
                batch.append(nxt)
                n += len(nxt.texts)
            await self._run_batch(batch, n)

    async def _run_batch(self, batch: list[_Item], n: int) -> None:
        loop = asyncio.get_running_loop()
        self._on_queue(-n)
        live = [it for it in batch if not it.future.done()]  # a cancelled request (client gone) costs nothing
        if not live:
            return
        texts = live[0].texts if len(live) == 1 else [t for it in live for t in it.texts]
        predict = self._predict
        assert predict is not None  # _run only starts after start() set it
        t0 = time.perf_counter()
        try:
            rows = await loop.run_in_executor(self.executor, predict, texts)
        except Exception as exc:
            if len(live) == 1:
                _resolve(live[0].future, exc=exc)
                return
            for it in live:  # isolate the request that broke the batch; the others still get answers
                t1 = time.perf_counter()
                try:
                    _resolve(it.future, (await loop.run_in_executor(self.executor, predict, it.texts), len(it.texts)))
                    self._on_batch(len(it.texts), time.perf_counter() - t1)
                except Exception as exc1:
                    _resolve(it.future, exc=exc1)
            return
        seconds = time.perf_counter() - t0
        self._on_batch(len(texts), seconds)
        self.cost.add(len(texts), seconds)
        start = 0
        for it in live:
            _resolve(it.future, (_slice(rows, start, start + len(it.texts)), len(texts)))
            start += len(it.texts)


def _resolve(fut: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
