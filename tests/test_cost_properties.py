"""Property tests (hypothesis) of the cost model on the repo's real measurements: no option's cost falls when a price
rises, replicas never fall when traffic rises, and scale-to-zero bills nothing once traffic stops and the grace ends."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.core.reports import BenchReport, ServeReport, read_report
from kit.cost.capacity import Capacity, measure_capacity
from kit.cost.compare import price_options, scale_prices
from kit.cost.options import always_on, make_setup
from kit.cost.pay_per_use import batch_job
from kit.cost.prices import PriceSheet, read_prices
from kit.cost.settings import CostSettings
from kit.cost.simulate import Autoscaler, simulate

REPO = Path(__file__).resolve().parents[1]
FAST = CostSettings(sim_max_arrivals=1_000)
QUICK = settings(max_examples=12, deadline=None, database=None)  # no .hypothesis/ in the project


@cache
def _cap() -> Capacity:
    serve = read_report(REPO / "reports/serve.json", ServeReport)
    return measure_capacity(serve, read_report(REPO / "reports/bench.json", BenchReport), p99_objective_ms=100.0)


@cache
def _sheet() -> PriceSheet:
    return read_prices(REPO / "cost/prices.yaml")


def _priced(sheet: PriceSheet, *, instance: float, function: float) -> PriceSheet:
    """The sheet with instance prices scaled by `instance` and the function's prices by `function`."""
    sheet = scale_prices(sheet, instance)
    fns = [
        f.model_copy(update={"usd_per_million_requests": f.usd_per_million_requests * function,
                             "usd_per_gb_s": f.usd_per_gb_s * function})
        for f in sheet.serverless
    ]  # fmt: skip
    return sheet.model_copy(update={"serverless": fns})


@QUICK
@given(
    per_day=st.floats(1e3, 1e7),
    base=st.tuples(st.floats(0.2, 3.0), st.floats(0.2, 3.0)),
    rise=st.tuples(st.floats(1.0, 4.0), st.floats(1.0, 4.0)),
)
def test_no_option_costs_less_when_a_price_rises(per_day, base, rise):
    s = FAST.with_requests(per_day)
    low = _priced(_sheet(), instance=base[0], function=base[1])
    high = _priced(_sheet(), instance=base[0] * rise[0], function=base[1] * rise[1])
    before = {o.name: o.monthly_usd for o in price_options(s, _cap(), low)}
    after = {o.name: o.monthly_usd for o in price_options(s, _cap(), high)}
    assert before.keys() == after.keys()
    for name in before:  # the simulations are seeded, so only the prices differ
        assert after[name] >= before[name] * (1 - 1e-9), (name, before[name], after[name])


@QUICK
@given(per_day=st.floats(1e2, 1e9), more=st.floats(1.0, 100.0), peak=st.floats(1.0, 6.0))
def test_replicas_never_fall_when_traffic_rises(per_day, more, peak):
    s = FAST.model_copy(update={"traffic": FAST.traffic.model_copy(update={"peak_factor": peak})})
    lo, hi = (make_setup(s.with_requests(n), _cap(), _sheet()) for n in (per_day, per_day * more))
    assert always_on(hi).replicas_at_peak >= always_on(lo).replicas_at_peak >= s.min_replicas
    assert batch_job(hi).replicas_at_peak >= batch_job(lo).replicas_at_peak >= 1
    assert always_on(hi).monthly_usd >= always_on(lo).monthly_usd


@QUICK
@given(
    busy=st.integers(1, 20),
    rate=st.floats(0.01, 20.0),
    grace=st.floats(0.0, 600.0),
    window=st.floats(6.0, 120.0),
    seed=st.integers(0, 1_000),
)
def test_scale_to_zero_bills_nothing_once_idle(busy, rate, grace, window, seed):
    """Traffic in the first `busy` hours only: with min scale 0, pods bill at most until the metric window has
    emptied and the grace period has passed after the last request; with min scale 1, one pod bills all day."""
    rates = np.where(np.arange(24) < busy, rate, 0.0)
    kpa = dict(kind="kpa", tick_s=2.0, window_s=window, down_delay_s=grace, start_s=1.0, max_pods=20)
    sim = simulate(rates, scaler=Autoscaler(min_pods=0, **kpa), slots=4, service_s=0.05, max_arrivals=2_000, seed=seed)
    tail_s = window + grace + 2 * 2.0  # the window empties, a tick sees it, the grace passes, a tick removes pods
    assert sim.mean_pods * 86_400 <= sim.peak_pods * (busy * 3_600 + tail_s) + 1e-6
    floor = simulate(rates, scaler=Autoscaler(min_pods=1, **kpa), slots=4, service_s=0.05, max_arrivals=2_000,
                     seed=seed)  # fmt: skip
    assert floor.mean_pods * 86_400 >= 86_400 - 1e-6
    assert simulate(np.zeros(24), scaler=Autoscaler(min_pods=0, **kpa), slots=4, service_s=0.05).mean_pods == 0
