"""The micro-batcher's adaptive wait: its run-cost fit and how long a batch waits for company."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kit.serve.batcher import MicroBatcher, RunCost


def _runs(overhead: float, per_text: float, sizes: list[int]) -> list[tuple[int, float]]:
    return [(n, overhead + per_text * n) for n in sizes]


def test_run_cost_recovers_the_fixed_overhead_of_a_run() -> None:
    cost = RunCost(refit_every=4)
    assert cost.overhead_s is None
    cost.calibrate(_runs(0.004, 0.001, [1, 8]))
    assert cost.overhead_s == pytest.approx(0.004)
    for n, s in _runs(0.010, 0.002, [1, 2, 3, 4]):  # live runs replace the warm-up's estimate once refitted
        cost.add(n, s)
    assert cost.overhead_s == pytest.approx(0.010)


def test_run_cost_keeps_its_estimate_when_all_runs_have_one_size() -> None:
    cost = RunCost(refit_every=2)
    cost.calibrate([(4, 0.01), (4, 0.011)])  # one size: overhead and per-text cost cannot be told apart
    assert cost.overhead_s is None
    cost.calibrate(_runs(0.003, 0.001, [1, 8]))
    for _ in range(6):
        cost.add(8, 0.02)
    assert cost.overhead_s == pytest.approx(0.003)


def test_run_cost_never_reports_a_negative_overhead() -> None:
    cost = RunCost()
    cost.calibrate([(1, 0.004), (32, 0.160)])  # batches slower per text than single runs: intercept below 0
    assert cost.overhead_s == 0.0


def _batch_sizes(wait: str, calibration: list[tuple[int, float]]) -> tuple[list[int], float]:
    """Two requests 30 ms apart, with up to 300 ms allowed for a batch to fill."""
    sizes: list[int] = []

    async def main() -> float:
        b = MicroBatcher(8, 0.3, on_batch=lambda n, s: sizes.append(n), wait=wait)
        b.start(lambda texts: np.zeros((len(texts), 2)), calibration)
        first = asyncio.ensure_future(b.submit(["a"]))
        await asyncio.sleep(0.03)
        await asyncio.gather(first, b.submit(["b"]))
        limit = b.wait_limit_s()
        await b.close()
        return limit

    return sizes, asyncio.run(main())


def test_adaptive_wait_does_not_hold_a_batch_when_runs_have_no_fixed_cost() -> None:
    # A CPU-like model: a run costs the same per text at any size, so merging saves nothing; the first request runs
    # at once instead of waiting up to 300 ms for the second.
    sizes, limit = _batch_sizes("adaptive", _runs(0.0, 0.001, [1, 8]))
    assert limit == pytest.approx(0.0, abs=1e-9) and sizes == [1, 1]


def test_adaptive_wait_holds_a_batch_up_to_the_fixed_cost_of_a_run() -> None:
    # A GPU-like model: 100 ms per launch whatever the size, so waiting 30 ms for a second request pays.
    sizes, limit = _batch_sizes("adaptive", _runs(0.1, 0.0001, [1, 8]))
    assert limit == pytest.approx(0.1) and sizes == [2]


def test_fixed_wait_always_waits_for_max_delay() -> None:
    sizes, limit = _batch_sizes("fixed", _runs(0.0, 0.001, [1, 8]))
    assert limit == 0.3 and sizes == [2]


def test_unknown_wait_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="wait must be"):
        MicroBatcher(8, 0.01, wait="sometimes")


def test_tuple_rows_come_back_per_request_with_the_batch_size_they_ran_in() -> None:
    # A model run returning (probabilities, embeddings or None): each request gets its own rows of every array,
    # a split request its chunks concatenated, and the size of the largest micro-batch it ran in.
    def predict(texts: list[str]) -> tuple[np.ndarray | None, ...]:
        n = np.array([[float(t)] for t in texts])
        return n, n * 10, None

    async def main():
        b = MicroBatcher(max_batch_size=3, max_delay_s=0.3, wait="fixed")
        b.start(predict)
        res = await asyncio.gather(b.submit_batched(["1"]), b.submit_batched(["2", "3"]), b.submit_batched(["4"]))
        split = await b.submit_batched([str(i) for i in range(5, 12)])  # 3 + 3 + 1
        await b.close()
        return res, split

    (one, two, three), split = asyncio.run(main())
    assert one.rows[0].ravel().tolist() == [1] and two.rows[1].ravel().tolist() == [20, 30] and one.rows[2] is None
    assert (one.batch_size, two.batch_size, three.batch_size) == (3, 3, 1)
    assert split.rows[0].ravel().tolist() == list(range(5, 12)) and split.batch_size == 3
