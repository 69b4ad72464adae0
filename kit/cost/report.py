"""The cost stage's report (CostReport, reports/cost.json) and `assemble_cost`, which builds it from the already-read
serve, bench and train reports and the price sheet: options, break-even, recommendation, training."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from kit.core.reports import BenchReport, ServeReport, StageReport, TrainReport
from kit.cost.breakeven import ChoiceChange, Crossover, Curves, choice_changes, cost_curves, crossovers
from kit.cost.capacity import Capacity, instance_warnings, measure_capacity, pods_per_instance, replica_capacity
from kit.cost.compare import PricePoint, price_options, price_sensitivity, recommend
from kit.cost.options import OptionCost, always_on, make_setup
from kit.cost.prices import PriceSheet
from kit.cost.settings import ASSUMPTIONS, CostSettings
from kit.cost.training import TrainingCost, training_cost

__all__ = ["Recommendation", "PodSize", "CostReport", "assemble_cost"]


class Recommendation(BaseModel):
    """The cheapest option meeting the objective at the profile's traffic, and what would change it: the volumes
    where another option takes over (`changes_at`) and the choice under scaled instance prices (`by_price`)."""

    option: str | None
    monthly_usd: float | None
    usd_per_million: float | None
    reason: str
    changes_at: list[ChoiceChange]
    by_price: list[PricePoint]


class PodSize(BaseModel):
    """One measured pod size on the chosen instance: what it carries per vCPU and what a text costs at full load.
    The options are priced with the first (`priced`), the size the rendered manifests deploy."""

    pod: str  # how it was measured
    vcpus: int
    texts_per_s: float
    texts_per_s_per_vcpu: float
    pods_per_node: int
    usd_per_million_at_full_load: float  # the pod's share of the instance-hour over the texts it carries in an hour
    always_on_monthly_usd: float  # the always-on option sized with this pod
    priced: bool
    deploy_with: str  # the setting that deploys pods of this size


def _pod_sizes(settings: CostSettings, cap: Capacity, serve: ServeReport, prices: PriceSheet) -> list[PodSize]:
    inst = prices.instance(settings.instance)
    smaller = replica_capacity(serve, cap, p99_objective_ms=settings.traffic.p99_objective_ms)
    rep = serve.replicas
    sizes = [(cap, "one server on all the load test's cores", f"serve.threads: {serve.config.serve.threads}", True)]
    if smaller is not None and rep is not None:
        how = f"{rep.replicas} pinned replicas of {rep.threads_per_replica} thread(s) on the same cores"
        sizes.append((smaller, how, f"serve.threads: {rep.threads_per_replica}", False))
    out = []
    for c, how, setting, priced in sizes:
        per_node = pods_per_instance(c, inst)
        per_hour = inst.on_demand_usd_h / per_node
        out.append(
            PodSize(
                pod=how, vcpus=c.pod_vcpus, texts_per_s=round(c.pod_texts_per_s, 2),
                texts_per_s_per_vcpu=round(c.pod_texts_per_s / c.pod_vcpus, 2), pods_per_node=per_node,
                usd_per_million_at_full_load=round(per_hour / (c.pod_texts_per_s * 3600) * 1e6, 6),
                always_on_monthly_usd=always_on(make_setup(settings, c, prices)).monthly_usd, priced=priced,
                deploy_with=setting,
            )
        )  # fmt: skip
    return out


class CostReport(StageReport):
    """reports/cost.json: the options priced at the traffic profile, break-even curves and points, training cost.

    `prices` names the sheet and its rows' sources; `assumptions` the figures that are not measured."""

    stage: Literal["cost"] = "cost"
    settings: CostSettings
    prices: dict[str, str]  # row name -> "source (date)", plus "path"
    capacity: Capacity
    pod_sizes: list[PodSize] = []  # the measured pod sizes side by side (the load test's replica arm)
    options: list[OptionCost]
    recommendation: Recommendation
    curves: Curves
    crossovers: list[Crossover]
    training: TrainingCost
    warnings: list[str]
    assumptions: dict[str, str]
    plots: list[str] = []  # project-relative PNGs the stage wrote


def _recommendation(
    options: list[OptionCost], changes: list[ChoiceChange], by_price: list[PricePoint], *, per_day: float
) -> Recommendation:
    best = recommend(options)
    if best is None:
        return Recommendation(
            option=None,
            monthly_usd=None,
            usd_per_million=None,
            reason="no option meets the p99 objective at this traffic",
            changes_at=changes,
            by_price=by_price,
        )
    reason = (
        f"cheapest of the options whose p99 ({best.p99_ms:.0f} ms) meets the objective at {per_day:,.0f} requests/day"
    )
    return Recommendation(
        option=best.name,
        monthly_usd=best.monthly_usd,
        usd_per_million=best.usd_per_million,
        reason=reason,
        changes_at=changes,
        by_price=by_price,
    )


def assemble_cost(
    settings: CostSettings, *, serve: ServeReport, bench: BenchReport, train: TrainReport, prices: PriceSheet
) -> CostReport:
    """Assemble the cost report from already-read reports and the price sheet.

    Args:
        settings: traffic profile, chosen price rows, autoscaler and assumption figures.
        serve: reports/serve.json (load-test capacity, cold start).
        bench: reports/bench.json (batch rate, batch-1 latency, distillation time).
        train: reports/train.json (fine-tune time, steps).
        prices: the validated price sheet.

    Returns:
        The CostReport (JSON round-trips through kit.core.reports.write_report / read_report).
    """
    cap = measure_capacity(serve, bench, p99_objective_ms=settings.traffic.p99_objective_ms)
    options = price_options(settings, cap, prices)
    curves = cost_curves(settings, cap, prices)
    marks = crossovers(curves)
    by_price = price_sensitivity(settings, cap, prices)
    inst, train_inst = prices.instance(settings.instance), prices.instance(settings.training_instance)
    warnings = instance_warnings(cap, inst)
    if train_inst.name != inst.name:
        warnings += instance_warnings(cap, train_inst)
    used = {inst, train_inst}
    rows = [*used, prices.function(settings.function), prices.scale_to_zero_model(settings.scale_to_zero)]
    sources = {"path": prices.path} | {r.name: f"{r.source} ({r.date.isoformat()})" for r in rows}
    return CostReport(
        settings=settings,
        prices=sources,
        capacity=cap,
        pod_sizes=_pod_sizes(settings, cap, serve, prices),
        options=options,
        recommendation=_recommendation(
            options, choice_changes(curves), by_price, per_day=settings.traffic.requests_per_day
        ),
        curves=curves,
        crossovers=marks,
        training=training_cost(settings, train=train, bench=bench, inst=train_inst),
        warnings=warnings,
        assumptions=ASSUMPTIONS | {"scaling": cap.sources["scaling"]},
    )
