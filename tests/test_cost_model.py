"""The cost model's formulas and simulation: Erlang C by hand, the SimPy simulation against M/M/c, autoscaler
behaviour (scale to zero, cold starts), Young/Daly, and the crossover finder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kit.cost.breakeven import Curves, choice_changes, crossovers
from kit.cost.queueing import erlang_c, expected_runtime, mmc_mean_wait, mmc_wait_quantile, young_daly_interval
from kit.cost.simulate import Autoscaler, simulate
from kit.cost.training import mtbf_hours


def test_erlang_c_hand_computed():
    # c=2, A=1: (A^2/2! * 2/(2-1)) / (1 + 1 + 1) = 1/3; M/M/1 waits with probability rho.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.6) == pytest.approx(0.6)
    assert mmc_mean_wait(2, 1.0, 1.0) == pytest.approx(1 / 3)  # C / (c mu - lambda)
    assert mmc_mean_wait(1, 0.5, 1.0) == pytest.approx(1.0)  # M/M/1: rho / (mu - lambda)
    assert mmc_wait_quantile(2, 1.0, 1.0, 0.5) == 0.0  # only a third wait at all
    assert mmc_wait_quantile(1, 0.5, 1.0, 0.99) == pytest.approx(math.log(0.5 / 0.01) / 0.5)
    assert erlang_c(3, 3.0) == 1.0 and math.isinf(mmc_mean_wait(3, 3.0, 1.0))


def _fixed_pool(servers: int, lam: float, seed: int):
    # One pod of `servers` slots that never scales: an M/M/c queue.
    return simulate(
        np.array([lam]),
        scaler=Autoscaler(min_pods=1, max_pods=1),
        slots=servers,
        service_s=1.0,
        duration_s=30_000,
        max_arrivals=200_000,
        seed=seed,
    )


def test_simulation_agrees_with_erlang_c():
    c, lam = 4, 3.0
    sim = _fixed_pool(c, lam, seed=3)
    assert sim.requests_per_arrival == 1.0 and sim.simulated_arrivals > 80_000
    assert sim.waiting_share == pytest.approx(erlang_c(c, lam), abs=0.03)
    assert sim.mean_wait_s == pytest.approx(mmc_mean_wait(c, lam, 1.0), rel=0.12)
    assert sim.p99_wait_ms / 1000 == pytest.approx(mmc_wait_quantile(c, lam, 1.0, 0.99), rel=0.15)
    assert sim.idle_share == pytest.approx(1 - lam / c, abs=0.02)
    # The comparison discriminates: the same traffic on 5 servers is far from Erlang C for 4.
    other = _fixed_pool(5, lam, seed=3)
    assert other.mean_wait_s < 0.5 * mmc_mean_wait(c, lam, 1.0)


def test_scale_to_zero_costs_nothing_without_traffic_and_cold_starts_at_low_traffic():
    kpa = Autoscaler(kind="kpa", min_pods=0, tick_s=2, window_s=60, down_delay_s=30, start_s=3.0)
    idle = simulate(np.zeros(24), scaler=kpa, slots=8, service_s=0.01)
    assert idle.mean_pods == 0.0 and idle.peak_pods == 0 and idle.requests == 0
    kept = simulate(np.zeros(24), scaler=kpa.model_copy(update={"min_pods": 1}), slots=8, service_s=0.01)
    assert kept.mean_pods == pytest.approx(1.0) and kept.idle_share == 1.0
    # One request every ~10 minutes: a request is cold when none came in the pod's life after the previous one
    # (stable window + grace period + start), exp(-93/600) for Poisson arrivals; it waits the start time.
    sparse = simulate(np.full(24, 1 / 600), scaler=kpa, slots=8, service_s=0.01, seed=1)
    assert sparse.cold_share == pytest.approx(math.exp(-(60 + 30 + 3) / 600), abs=0.07)
    assert sparse.cold_wait_mean_s == pytest.approx(3.0, abs=0.05)
    assert sparse.mean_pods < 0.25  # alive ~ window + grace + start after each request


def test_hpa_follows_the_load_up_and_down():
    rates = np.array([10.0] * 6 + [170.0] * 6 + [10.0] * 12)  # pod rate 8 slots / 0.1 s = 80 requests/s
    hpa = Autoscaler(min_pods=1, max_pods=20, target_utilization=0.7, down_delay_s=300, start_s=2.0)
    sim = simulate(rates, scaler=hpa, slots=8, service_s=0.1)
    assert sim.peak_pods == math.ceil(170 / (80 * 0.7))  # 4
    assert 1.0 < sim.mean_pods < 2.5  # 4 pods a quarter of the day, 1 otherwise (plus lag)
    assert sim.requests == pytest.approx(rates.sum() * 3600, rel=0.02)


def test_young_daly_and_expected_runtime():
    assert young_daly_interval(10.0, 18_000.0) == pytest.approx(600.0)  # sqrt(2 x 10 x 18000)
    # No interruptions: the work plus one write per full interval (none after the last segment).
    assert expected_runtime(1000.0, interval_s=100.0, write_s=5.0, mtbf_s=math.inf, restart_s=60) == 1045.0
    work, write, mtbf = 36_000.0, 30.0, 7_200.0
    opt = young_daly_interval(write, mtbf)

    def wall(tau):
        return expected_runtime(work, interval_s=tau, write_s=write, mtbf_s=mtbf, restart_s=60.0)

    assert wall(opt) < wall(opt / 4) and wall(opt) < wall(opt * 4)
    assert wall(opt) > work  # interruptions cost time
    assert mtbf_hours(0.05) == pytest.approx(730 / -math.log(0.95))
    assert math.isinf(mtbf_hours(0.0))


def _curves(costs: dict[str, list[float]], grid: list[float], holds: dict[str, list[bool]] | None = None) -> Curves:
    holds = holds or {n: [True] * len(grid) for n in costs}
    recommended = []
    for k in range(len(grid)):
        ok = [n for n in costs if holds[n][k]]
        recommended.append(min(ok, key=lambda n: costs[n][k]) if ok else None)
    return Curves(requests_per_day=grid, monthly_usd=costs, p99_holds=holds, recommended=recommended)


def test_crossovers_found_and_named():
    grid = [1.0, 10.0, 100.0, 1000.0]
    costs = {"pay": [1.0, 10.0, 100.0, 1000.0], "fixed": [10.0, 10.0, 10.0, 10.0], "floor": [5.0, 5.0, 50.0, 500.0]}
    marks = crossovers(_curves(costs, grid))
    by_pair = {(m.cheaper_below, m.cheaper_above): m for m in marks}
    assert by_pair[("pay", "fixed")].requests_per_day == pytest.approx(10.0)  # on a grid point
    assert by_pair[("pay", "fixed")].text == "pay is cheaper than fixed below 10 requests/day"
    assert by_pair[("floor", "fixed")].requests_per_day == pytest.approx(20.0)  # floor = 5 x/10 there: log-log
    assert ("pay", "floor") in by_pair and by_pair[("pay", "floor")].requests_per_day == pytest.approx(5.0)
    assert len(marks) == 3
    assert crossovers(_curves({"a": [1.0, 1.0], "b": [1.0, 1.0]}, [1.0, 2.0])) == []


def test_choice_changes_at_cost_crossings_and_where_the_objective_starts_holding():
    grid = [1.0, 10.0, 100.0, 1000.0]
    costs = {"pay": [1.0, 10.0, 100.0, 1000.0], "fixed": [20.0, 20.0, 20.0, 20.0], "cold": [0.1, 0.2, 0.3, 0.4]}
    holds = {"pay": [True] * 4, "fixed": [True] * 4, "cold": [False, False, False, True]}
    changes = choice_changes(_curves(costs, grid, holds))
    assert [(c.below, c.above) for c in changes] == [("pay", "fixed"), ("fixed", "cold")]
    assert changes[0].requests_per_day == pytest.approx(20.0) and "cost crossing" in changes[0].text
    assert changes[1].requests_per_day == pytest.approx(math.sqrt(100 * 1000))  # bracket's geometric middle
    assert "p99 verdicts change" in changes[1].text
