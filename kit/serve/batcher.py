"""The asyncio micro-batcher: groups concurrent requests into model runs of similar token length (kit.serve.buckets),
run in one worker thread so the event loop stays free; a request waits for company no longer than one run's fixed cost.
A run returns one array, or a tuple of arrays (or None), row-aligned with its texts; each request gets its rows back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic

import numpy as np

from kit.serve.buckets import RunCost, calibration_grid, measure_grid, plan_batches
from kit.serve.rows import Batched, Rows, concat_rows, slice_rows, take_rows

__all__ = ["MicroBatcher", "ModelUnavailable", "RunCost", "Batched", "Rows"]


class ModelUnavailable(Exception):
    """The batcher cannot take work: the model failed to load, or the server is shutting down."""


log = logging.getLogger(__name__)

# Requests whose texts hold at most this many characters are tokenized on the event loop (tens of microseconds);
# larger ones in a thread, so a bulk request never stalls the loop.
_INLINE_CHARS = 4096


@dataclass
class _Item:
    units: list  # what the model runs per text: its tokens, or the text itself when the batcher has no tokenizer
    length: int  # the longest unit's token count: what this item pads a batch to
    arrived: float  # event-loop time it was queued: it waits for company until arrived + the wait limit
    future: asyncio.Future  # resolves to (rows of these texts, texts in the model run they were part of)


_STOP = object()  # ends the worker after everything queued before it
_WAKE = object()  # interrupts a wait for more requests (drain started)


class MicroBatcher(Generic[Rows]):
    """Queue texts from concurrent requests and run them together: up to `max_batch_size` texts per model run, grouped
    by token length so a batch pads little, each length bucket at the batch size the fitted `RunCost` says pays. A
    request waits for company at most `max_delay_s` after it arrived (with `wait="adaptive"` also at most one run's
    fixed cost); a request larger than a batch is split into chunks of similar length. Requests are never split across
    a failure: if a batch raises, its requests are retried one by one so that only the bad one fails."""

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
        max_delay_s: longest wait for company after a request arrives.
        on_batch: called with (texts, seconds) after each model run (metrics).
        on_queue: called with the change in queued texts (+n on submit, -n when taken into a batch or dropped).
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
        self._pending: list[_Item] = []  # taken from the queue, not yet run: oldest first
        # One thread: ONNX Runtime already uses `threads` cores per run; a second concurrent run would only contend.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit-model")
        self._predict: Callable[[list[Any]], Rows] | None = None
        self._tokenize: Callable[[list[str]], Sequence[Any]] | None = None
        self._started: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._flush = False
        self._closed = False
        self._error: str | None = None

    def wait_limit_s(self) -> float:
        """How long a request may wait for company after it arrived."""
        overhead = self.cost.overhead_s
        if self.wait == "fixed" or overhead is None:
            return self.max_delay_s
        return min(self.max_delay_s, overhead)

    async def warm_up(
        self,
        run: Callable[[list[Any]], Any],
        filler: Callable[[int, int], list[Any]],
        max_length: int,
        repeats: int = 2,
    ) -> list[tuple[int, int, float]]:
        """Warm the model on the worker thread and time it on a grid of batch sizes x padded lengths (`measure_grid`).

        Args:
            run: the model run on a list of units (tokens), as `start` will get it.
            filler: (texts, tokens) -> that many units of exactly that many tokens.
            max_length: the model's truncation length (the longest padded batch).
            repeats: timed runs per grid point; the fastest counts (a run another process preempted is slow for
                reasons the model does not have).

        Returns:
            (texts, padded length, seconds) per grid point: `start`'s calibration.
        """
        grid = calibration_grid(self.max_batch_size, max_length)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, measure_grid, run, filler, grid, repeats)

    def start(
        self,
        predict: Callable[[list[Any]], Rows],
        calibration: Iterable[tuple[int, int, float]] = (),
        tokenize: Callable[[list[str]], Sequence[Any]] | None = None,
    ) -> None:
        """Begin running queued work (call inside the event loop, once the model is warm).

        Args:
            predict: units -> their rows (probabilities; or a tuple, e.g. with embeddings), run in the worker thread.
                The units are `tokenize`'s output for the texts, or the texts themselves without a tokenizer.
            calibration: (texts, padded length, seconds) of warm-up runs (`warm_up`): seeds the run-cost fit.
            tokenize: texts -> one unit per text whose len() is its token count, done once per request as it
                arrives, so batches can be grouped by length. None: texts run as they are, all of one length.
        """
        self.cost.calibrate(calibration)
        overhead = self.cost.overhead_s
        if overhead is not None:
            # What the planner will do, in the log: the fixed cost per run and each length's batch size.
            sizes = {n: self.cost.best_batch_size(n, self.max_batch_size) for n in (8, 16, 32, 64, 128)}
            log.info("run cost: %.2f ms fixed per run; batch size by padded length %s", overhead * 1e3, sizes)
        self._predict, self._tokenize = predict, tokenize
        self._ensure_started().set()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="kit-micro-batcher")

    def _ensure_started(self) -> asyncio.Event:
        if self._started is None:  # made lazily: an Event belongs to the loop that first waits on it
            self._started = asyncio.Event()
        return self._started

    def fail(self, message: str) -> None:
        """The model will never be available: fail queued and future requests with `message`."""
        self._error = message
        self._ensure_started().set()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Item):
                self._on_queue(-len(item.units))
                _resolve(item.future, exc=ModelUnavailable(message))

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

    def _check_open(self) -> None:
        if self._error is not None:
            raise ModelUnavailable(self._error)
        if self._closed:
            raise ModelUnavailable("server is shutting down")

    async def submit_batched(self, texts: list[str]) -> Batched[Rows]:
        """Queue `texts` and wait for their rows and the size of the micro-batch they ran in.

        Raises:
            ModelUnavailable: the model failed to load or the batcher is closed.
        """
        self._check_open()
        await self._ensure_started().wait()  # the tokenizer comes with the model
        self._check_open()
        units = await self._units(texts)
        loop = asyncio.get_running_loop()
        lengths = np.fromiter((len(u) for u in units), np.int64, len(units)) if self._tokenize else np.ones(len(units))
        step = self.max_batch_size
        # A bulk request is cut into chunks of neighbouring lengths, so each chunk pads little.
        order = np.argsort(lengths, kind="stable") if len(units) > step else np.arange(len(units))
        chunks = [order[i : i + step] for i in range(0, len(units), step)]
        now = loop.time()
        items = [_Item([units[j] for j in c], int(lengths[c].max()), now, loop.create_future()) for c in chunks]
        for item in items:
            self._queue.put_nowait(item)
        self._on_queue(len(texts))
        if len(items) == 1:
            rows, size = await items[0].future
            return Batched(rows, size)
        done = await asyncio.gather(*(it.future for it in items))
        back = np.argsort(np.concatenate(chunks), kind="stable")  # sorted chunks -> the request's own order
        return Batched(take_rows(concat_rows([rows for rows, _ in done]), back), max(size for _, size in done))

    async def _units(self, texts: list[str]) -> Sequence[Any]:
        tokenize = self._tokenize
        if tokenize is None:
            return texts
        if sum(len(t) for t in texts) <= _INLINE_CHARS:
            return tokenize(texts)
        return await asyncio.to_thread(tokenize, texts)

    async def close(self) -> None:
        """Refuse new work, finish everything queued, stop the worker and its thread."""
        self._closed = True
        self._flush = True
        self._ensure_started().set()  # requests still waiting for a model that never came: refused, not hung
        if self._worker is not None and not self._worker.done():
            self._queue.put_nowait(_STOP)
            await self._worker
        self.executor.shutdown(wait=True)

    def _take_queued(self, first: Any = None) -> bool:
        """Move `first` and everything queued now into the pending list; True when the stop marker came."""
        stop = False
        nxt = first
        while True:
            if nxt is _STOP:
                stop = True
            elif isinstance(nxt, _Item):
                self._pending.append(nxt)
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return stop

    def _prune(self) -> None:
        """Drop pending items whose request is gone (client disconnected, failed): they cost no model time."""
        gone = [it for it in self._pending if it.future.done()]
        if gone:
            self._pending = [it for it in self._pending if not it.future.done()]
            self._on_queue(-sum(len(it.units) for it in gone))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while True:
            self._prune()
            if not self._pending:
                if stop:
                    break
                stop = self._take_queued(await self._queue.get()) or stop
                continue
            stop = self._take_queued() or stop
            wait = self.wait_limit_s()
            if wait != self._wait_s:
                self._wait_s = wait
                self._on_wait(wait)
            # Wait for company while the oldest request is within its limit and no batch could be full yet.
            deadline = self._pending[0].arrived + wait
            while not (stop or self._flush) and sum(len(it.units) for it in self._pending) < self.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                if nxt is _WAKE:
                    break
                stop = self._take_queued(nxt) or stop
            self._prune()
            if self._pending:
                await self._run_batch(self._next_batch())

    def _next_batch(self) -> list[_Item]:
        """The cheapest length-homogeneous batch that holds the oldest pending item (so nothing waits behind newer
        work), taken out of the pending list."""
        pending = self._pending
        if len(pending) == 1:
            self._pending = []
            return pending
        lengths = np.fromiter((it.length for it in pending), np.int64, len(pending))
        sizes = np.fromiter((len(it.units) for it in pending), np.int64, len(pending))
        first = plan_batches(lengths, sizes, self.max_batch_size, self.cost)[0]
        chosen = set(first.tolist())
        self._pending = [it for i, it in enumerate(pending) if i not in chosen]
        return [pending[i] for i in first]

    async def _run_batch(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        n = sum(len(it.units) for it in batch)
        self._on_queue(-n)
        units = batch[0].units if len(batch) == 1 else [u for it in batch for u in it.units]
        predict = self._predict
        assert predict is not None  # _run only starts after start() set it
        try:
            rows, seconds = await loop.run_in_executor(self.executor, _timed, predict, units)
        except Exception as exc:
            if len(batch) == 1:
                _resolve(batch[0].future, exc=exc)
                return
            for it in batch:  # isolate the request that broke the batch; the others still get answers
                t1 = time.perf_counter()
                try:
                    _resolve(it.future, (await loop.run_in_executor(self.executor, predict, it.units), len(it.units)))
                    self._on_batch(len(it.units), time.perf_counter() - t1)
                except Exception as exc1:
                    _resolve(it.future, exc=exc1)
            return
        self._on_batch(n, seconds)
        self.cost.add(n, max(it.length for it in batch), seconds)
        start = 0
        for it in batch:
            _resolve(it.future, (slice_rows(rows, start, start + len(it.units)), n))
            start += len(it.units)


def _timed(predict: Callable[[list[Any]], Rows], units: list[Any]) -> tuple[Rows, float]:
    """One model run and its seconds, timed in the worker thread: the cost model learns the model's cost, not the
    event loop's delay in getting back to the batch (which other requests' HTTP work sets)."""
    t = time.perf_counter()
    rows = predict(units)
    return rows, time.perf_counter() - t


def _resolve(fut: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
