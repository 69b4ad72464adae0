"""assemble_cost on the repo's real reports: a CostReport that round-trips as JSON, its recommendation, crossovers and
training cost; the break-even plot is written."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kit.core.reports import BenchReport, ServeReport, TrainReport, read_report, write_report
from kit.cost import CostReport, CostSettings, assemble_cost, plot_breakeven, read_prices
from kit.cost.options import OPTION_NAMES
from kit.cost.queueing import young_daly_interval

REPO = Path(__file__).resolve().parents[1]
FAST = CostSettings(sim_max_arrivals=5_000, curve_points=7, curve_max_arrivals=2_000)


@pytest.fixture(scope="module")
def report() -> CostReport:
    return assemble_cost(
        FAST,
        serve=read_report(REPO / "reports/serve.json", ServeReport),
        bench=read_report(REPO / "reports/bench.json", BenchReport),
        train=read_report(REPO / "reports/train.json", TrainReport),
        prices=read_prices(REPO / "cost/prices.yaml"),
    )


def test_report_round_trips_as_json(report, tmp_path):
    path = write_report(tmp_path / "cost.json", report)
    back = read_report(path, CostReport)
    assert back == report
    assert [o.name for o in back.options] == OPTION_NAMES
    assert back.settings.traffic.requests_per_day == 1e6
    assert "c7a.large" in back.prices and "not verified offline" in back.prices["c7a.large"]
    assert "scaling" in back.assumptions and back.warnings == []


def test_recommendation_meets_the_objective_and_names_what_changes_it(report):
    rec = report.recommendation
    chosen = next(o for o in report.options if o.name == rec.option)
    assert chosen.p99_holds
    assert all(o.monthly_usd >= chosen.monthly_usd for o in report.options if o.p99_holds)
    # Along the traffic grid the choice moves off and back onto the recommended option; each change is named.
    assert rec.changes_at and any(rec.option in (c.below, c.above) for c in rec.changes_at)
    grid = report.curves.requests_per_day
    assert all(grid[0] < c.requests_per_day < grid[-1] for c in rec.changes_at)
    assert [p.factor for p in rec.by_price] == [0.25, 0.5, 1, 2, 4]
    assert next(p for p in rec.by_price if p.factor == 1).option == rec.option
    texts = [c.text for c in report.crossovers]
    assert any(t.startswith("serverless is cheaper than always_on below") for t in texts)
    assert len(grid) == FAST.curve_points == len(report.curves.recommended)
    assert all(len(report.curves.monthly_usd[n]) == FAST.curve_points for n in OPTION_NAMES)


def test_training_cost_on_spot_vs_on_demand(report):
    # Expected figures come from the very reports the cost stage read (the repo's last run), computed by hand.
    train = read_report(REPO / "reports/train.json", TrainReport).train
    distill_s = read_report(REPO / "reports/bench.json", BenchReport).distill["seconds"]
    tr = report.training
    assert tr.work_s == pytest.approx(train.train_time_s + distill_s)  # c7a.large has the measured 2 vCPUs
    assert tr.interval_params_s == pytest.approx(FAST.checkpoint_every_steps * train.train_time_s / train.steps)
    write_s = train.checkpoint_write_s if train.checkpoint_write_s is not None else FAST.checkpoint_write_s
    assert tr.checkpoint_write_s == pytest.approx(write_s)
    assert tr.interval_optimal_s == pytest.approx(young_daly_interval(tr.checkpoint_write_s, tr.mtbf_h * 3600))
    on_demand, spot_params, spot_optimal = tr.runs
    writes = math.floor(tr.work_s / tr.interval_params_s)
    assert on_demand.wall_s == pytest.approx(tr.work_s + writes * tr.checkpoint_write_s)
    assert spot_params.wall_s > spot_optimal.wall_s  # fewer writes at the optimal interval
    assert spot_optimal.usd < on_demand.usd and 0 < tr.spot_saving_share < 1


def test_breakeven_plot_is_written(report, tmp_path):
    out = plot_breakeven(report.curves, report.crossovers, tmp_path / "plots" / "cost_breakeven.png", at=1e6)
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000


def test_importing_the_package_loads_no_heavy_module():
    code = (
        "import sys, kit.cost; heavy = {'simpy', 'scipy', 'matplotlib', 'pandas'} & set(sys.modules); "
        "print(sorted(heavy)); kit.cost.erlang_c; print('simpy' in sys.modules, 'scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "False False"]
    assert "run_cost" in dir(importlib.import_module("kit.cost"))


def test_pod_sizes_price_the_replica_arm_beside_the_deployed_pod(report):
    from kit.cost.capacity import measure_capacity, replica_capacity
    from kit.cost.report import _pod_sizes

    serve = read_report(REPO / "reports/serve.json", ServeReport)
    bench = read_report(REPO / "reports/bench.json", BenchReport)
    prices = read_prices(REPO / "cost/prices.yaml")
    inst = prices.instance(FAST.instance)
    cap = measure_capacity(serve, bench, p99_objective_ms=FAST.traffic.p99_objective_ms)
    big = report.pod_sizes[0]
    assert big.priced and big.vcpus == cap.pod_vcpus and big.texts_per_s == pytest.approx(cap.pod_texts_per_s, abs=0.01)
    # A text's cost at full load: the pod's share of the instance-hour over the texts it carries in that hour.
    per_hour = inst.on_demand_usd_h / big.pods_per_node
    assert big.usd_per_million_at_full_load == pytest.approx(per_hour / (big.texts_per_s * 3600) * 1e6, rel=1e-4)
    assert big.always_on_monthly_usd == next(o.monthly_usd for o in report.options if o.name == "always_on")
    rep = serve.replicas
    objective = FAST.traffic.p99_objective_ms
    if rep is None or rep.best_rps_within_p99 is None:
        assert len(report.pod_sizes) == 1 and replica_capacity(serve, cap, p99_objective_ms=objective) is None
    else:
        small = report.pod_sizes[1]
        assert not small.priced and small.vcpus == rep.threads_per_replica
        assert small.texts_per_s == pytest.approx(rep.best_rps_within_p99 / rep.replicas, abs=0.01)
        assert small.deploy_with == f"serve.threads: {rep.threads_per_replica}"
        assert small.pods_per_node == inst.vcpu // rep.threads_per_replica
    # A report without the arm (written before it, or deploy.replica_threads null): one size only.
    bare = serve.model_copy(update={"replicas": None})
    assert replica_capacity(bare, cap, p99_objective_ms=objective) is None
    assert len(_pod_sizes(FAST, cap, bare, prices)) == 1
    # The smaller pod is judged by the cost stage's objective, as the larger one is: none of its levels met 1 ms.
    assert replica_capacity(serve, cap, p99_objective_ms=1.0) is None
