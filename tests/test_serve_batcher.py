"""The micro-batcher: its run-cost fit cost(batch, padded length), the length-bucketing planner, the wait limit, and
answers mapped back to the right requests in order."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kit.serve.batcher import MicroBatcher, ModelUnavailable
from kit.serve.buckets import RunCost, calibration_grid, plan_batches


def _cpu_like(b: int, length: int) -> float:
    """Seconds of a CPU run: small launch cost, linear and attention (quadratic) cost per padded token, and a
    large-batch penalty (activations leaving cache)."""
    return 0.0003 + 2e-5 * b * length + 3e-7 * b * length * length + 2e-7 * b * b * length


def _grid(fn, max_batch: int = 32, max_length: int = 64) -> list[tuple[int, int, float]]:
    return [(b, n, fn(b, n)) for b, n in calibration_grid(max_batch, max_length)]


def test_run_cost_recovers_the_cost_surface_from_the_warm_up_grid() -> None:
    cost = RunCost()
    assert cost.overhead_s is None and cost.coef is None
    cost.calibrate(_grid(_cpu_like))
    assert cost.overhead_s == pytest.approx(0.0003, rel=1e-3)
    for b, n in ((2, 10), (8, 40), (24, 50)):  # off the grid too
        assert cost.seconds(b, n) == pytest.approx(_cpu_like(b, n), rel=1e-3)
    # Each length's batch size is where the launch saved stops outweighing the large-batch penalty: larger for
    # short texts than for long ones.
    for n in (8, 64):
        assert cost.best_batch_size(n, 32) == min(range(1, 33), key=lambda b: _cpu_like(b, n) / b)
    assert cost.best_batch_size(64, 32) < cost.best_batch_size(8, 32)


def test_live_runs_fit_the_model_when_the_warm_up_had_one_size_only() -> None:
    def live(b: int, n: int) -> float:
        return 0.010 + 1e-5 * b * n

    cost = RunCost(refit_every=16)
    cost.calibrate([(4, 16, live(4, 16)), (4, 32, live(4, 32))])  # one size: launch and per-text cost inseparable
    assert cost.overhead_s is None
    for _ in range(4):
        for b, n in ((1, 16), (8, 16), (1, 64), (8, 64)):
            cost.add(b, n, live(b, n))
    assert cost.overhead_s == pytest.approx(0.010, rel=1e-3)


def test_live_runs_correct_a_warm_up_fit_robustly() -> None:
    # The warm-up ran on a busy machine: its large batches were preempted and look three times dearer than they are,
    # so it would keep batches small. Live traffic (twice as slow all round, a few runs preempted ten times over)
    # shows what batches of 8 and 16 really cost: the refit follows it.
    def busy(b: int, n: int) -> float:
        return _cpu_like(b, n) * (3 if b >= 16 else 1)

    cost = RunCost(refit_every=16)
    cost.calibrate(_grid(busy))
    fooled = cost.best_batch_size(16, 32)
    for i in range(256):
        b, n = ((1, 16), (8, 16), (16, 16), (16, 40), (4, 40), (1, 40))[i % 6]
        cost.add(b, n, _cpu_like(b, n) * (20 if i % 17 == 0 else 2))

    def per_text(b: int) -> float:  # what a batch size really costs per text at 16 tokens
        return _cpu_like(b, 16) / b

    best = min(per_text(b) for b in range(1, 33))
    # The optimum is flat: judged by what the chosen size really costs, the refit is within 3%, the warm-up not.
    assert per_text(fooled) > 1.05 * best and per_text(cost.best_batch_size(16, 32)) < 1.03 * best
    assert cost.overhead_s == pytest.approx(2 * 0.0003, rel=0.3)  # the live speed, not the warm-up's


def test_run_cost_never_fits_a_negative_coefficient() -> None:
    cost = RunCost()
    cost.calibrate([(1, 64, 0.004), (32, 64, 0.160), (1, 16, 0.003), (32, 16, 0.03)])
    assert cost.coef is not None and (cost.coef >= 0).all()


def _fitted() -> RunCost:
    cost = RunCost()
    cost.calibrate(_grid(_cpu_like))
    return cost


def test_planner_groups_texts_of_similar_length_and_covers_each_once() -> None:
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(8, 12, 20), rng.integers(56, 64, 20)])
    rng.shuffle(lengths)
    batches = plan_batches(lengths, np.ones(40, dtype=np.int64), 32, _fitted())
    assert sorted(np.concatenate(batches).tolist()) == list(range(40))
    for b in batches:  # no batch mixes the short texts with the long ones
        assert lengths[b].max() < 20 or lengths[b].min() > 50
        assert (np.diff(b) > 0).all()  # queue order inside a batch
    assert [int(b[0]) for b in batches] == sorted(int(b[0]) for b in batches)  # the oldest item's batch first
    assert 0 in batches[0]


def test_planner_respects_the_batch_limit_and_never_splits_an_item() -> None:
    sizes = np.array([3, 5, 2, 6, 1, 4])
    batches = plan_batches(np.full(6, 20), sizes, 8, _fitted())
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    assert all(sizes[b].sum() <= 8 for b in batches)


def test_unfitted_planner_packs_in_queue_order() -> None:
    batches = plan_batches(np.array([60, 5, 60, 5]), np.array([2, 2, 1, 3]), 4, RunCost())
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3]]


def _words(texts: list[str]) -> list[list[str]]:
    return [t.split() for t in texts]  # a tokenizer stand-in: a text's length is its word count


def _echo(seen: list[list[int]]):
    def predict(units: list[list[str]]) -> tuple[np.ndarray, None]:
        seen.append([len(u) for u in units])
        return np.array([[float(u[0]), len(u)] for u in units]), None  # the request id and the length, per text

    return predict


def test_concurrent_requests_run_in_length_homogeneous_batches_and_get_their_own_rows() -> None:
    seen: list[list[int]] = []
    rng = np.random.default_rng(1)

    async def main():
        b = MicroBatcher(max_batch_size=16, max_delay_s=0.2, wait="fixed")
        b.start(_echo(seen), _grid(_cpu_like, 16, 64), tokenize=_words)
        # A request's texts run together (one item), so each request here is all short or all long.
        texts = [[f"{i} " + "w " * int(rng.choice([3, 4] if i % 2 else [58, 60])) for _ in range(1 + i % 3)]
                 for i in range(24)]  # fmt: skip
        out = await asyncio.gather(*(b.submit_batched(t) for t in texts))
        await b.close()
        return texts, out

    texts, out = asyncio.run(main())
    for t, done in zip(texts, out, strict=True):
        probs, _ = done.rows
        assert probs[:, 0].tolist() == [float(t[0].split()[0])] * len(t)  # its own rows ...
        assert probs[:, 1].tolist() == [len(x.split()) for x in t]  # ... in its texts' order
    assert sum(len(s) for s in seen) == sum(len(t) for t in texts) and len(seen) < len(texts)
    for lengths in seen:  # short (4-5 tokens) and long (59-61) texts never share a padded run
        assert max(lengths) < 10 or min(lengths) > 50


def test_a_bulk_request_is_cut_into_similar_length_chunks_and_answered_in_order() -> None:
    seen: list[list[int]] = []
    texts = [f"{i} " + "w " * (60 if i % 2 else 2) for i in range(12)]

    async def main():
        b = MicroBatcher(max_batch_size=6, max_delay_s=0.0)
        b.start(_echo(seen), _grid(_cpu_like, 6, 64), tokenize=_words)
        done = await b.submit_batched(texts)
        await b.close()
        return done

    done = asyncio.run(main())
    assert done.rows[0][:, 0].tolist() == [float(i) for i in range(12)] and done.batch_size == 6
    assert sorted(map(sorted, seen)) == [[3] * 6, [61] * 6]


def test_no_request_waits_for_company_longer_than_the_wait_limit() -> None:
    # Requests trickle in every 20 ms, never enough to fill a batch: without the limit all would wait for the last.
    limit = 0.25
    waits: list[float] = []

    async def main():
        loop = asyncio.get_running_loop()
        arrived: dict[str, float] = {}

        def predict(units: list[list[str]]) -> np.ndarray:
            now = loop.time()
            waits.extend(now - arrived[u[0]] for u in units)
            return np.zeros((len(units), 1))

        b = MicroBatcher(max_batch_size=64, max_delay_s=limit, wait="fixed")
        b.start(predict, tokenize=_words)
        tasks = []
        for i in range(60):
            arrived[str(i)] = loop.time()
            tasks.append(asyncio.ensure_future(b.submit([f"{i} w"])))
            await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
        await b.close()

    asyncio.run(main())
    assert len(waits) == 60
    # Scheduling slack only (a loaded machine): the limit itself is what keeps the wait far below the 1.2 s stream.
    assert max(waits) < limit + 0.3


def _batch_sizes(wait: str, calibration: list[tuple[int, int, float]]) -> tuple[list[int], float]:
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


def _linear(overhead: float, per_token: float) -> list[tuple[int, int, float]]:
    return [(b, n, overhead + per_token * b * n) for b in (1, 8) for n in (16, 64)]


def test_adaptive_wait_does_not_hold_a_batch_when_runs_have_no_fixed_cost() -> None:
    # A CPU-like model: a run costs the same per text at any size, so merging saves nothing; the first request runs
    # at once instead of waiting up to 300 ms for the second.
    sizes, limit = _batch_sizes("adaptive", _linear(0.0, 1e-5))
    assert limit == pytest.approx(0.0, abs=1e-9) and sizes == [1, 1]


def test_adaptive_wait_holds_a_batch_up_to_the_fixed_cost_of_a_run() -> None:
    # A GPU-like model: 100 ms per launch whatever the size, so waiting 30 ms for a second request pays.
    sizes, limit = _batch_sizes("adaptive", _linear(0.1, 1e-7))
    assert limit == pytest.approx(0.1, rel=1e-3) and sizes == [2]


def test_fixed_wait_always_waits_for_max_delay() -> None:
    sizes, limit = _batch_sizes("fixed", _linear(0.0, 1e-5))
    assert limit == 0.3 and sizes == [2]


def test_unknown_wait_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="wait must be"):
        MicroBatcher(8, 0.01, wait="sometimes")


def test_a_cancelled_request_costs_no_model_time() -> None:
    seen: list[list[int]] = []

    async def main():
        b = MicroBatcher(max_batch_size=8, max_delay_s=0.2, wait="fixed")
        b.start(_echo(seen), tokenize=_words)
        gone = asyncio.ensure_future(b.submit(["1 w w"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        kept = await b.submit(["2 w"])
        await b.close()
        return kept

    kept = asyncio.run(main())
    assert kept[0][:, 0].tolist() == [2.0] and seen == [[2]]


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


def test_the_model_runs_texts_tokenized_once_as_it_predicts_them() -> None:
    # The server tokenizes each request as it arrives and pads per batch: the answers equal a plain padded run.
    from kit.serve.model import OnnxTextClassifier, read_model_dir
    from tests.fixtures_deploy import TEXTS, tiny_serving_dir  # the serving dir the deploy tests build (cached)

    meta = read_model_dir(tiny_serving_dir(), 64)
    model = OnnxTextClassifier(meta, 1, counts=True)
    texts = TEXTS[:6] + ["word " * 100]
    tokens = model.tokenize(texts)
    assert [len(t) for t in tokens] == [len(model.tokenizer.encode(t).ids) for t in texts]  # unpadded, truncated
    assert max(len(t) for t in tokens) == meta.max_length and min(len(t) for t in tokens) < meta.max_length
    probs, _, counts = model.run_tokens(tokens)
    want_probs, _, want_counts = model.predict(texts)
    np.testing.assert_allclose(probs, want_probs, atol=2e-5)
    np.testing.assert_array_equal(counts, want_counts)
    assert [len(t) for t in model.filler(3, 9)] == [9, 9, 9]


def test_requests_wait_for_the_model_and_are_refused_if_it_never_comes() -> None:
    async def main():
        b = MicroBatcher(max_batch_size=4, max_delay_s=0.0)
        early = asyncio.ensure_future(b.submit(["1 w"]))  # before start: waits for the model and its tokenizer
        await asyncio.sleep(0.01)
        b.start(_echo([]), tokenize=_words)
        answered = await early
        late = MicroBatcher(max_batch_size=4, max_delay_s=0.0)
        stranded = asyncio.ensure_future(late.submit(["2 w"]))
        await asyncio.sleep(0.01)
        await late.close()
        await b.close()
        return answered, await asyncio.gather(stranded, return_exceptions=True)

    answered, (refused,) = asyncio.run(main())
    assert answered[0][:, 0].tolist() == [1.0]
    assert isinstance(refused, ModelUnavailable) and "shutting down" in str(refused)
