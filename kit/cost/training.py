"""Training cost: the measured fine-tune and distillation time priced on an instance, on demand and on spot, where
spot interruptions are met with checkpoints every N steps (the params) or at the Young/Daly optimal interval."""

from __future__ import annotations

import math

from pydantic import BaseModel

from kit.core.reports import BenchReport, TrainReport
from kit.cost.prices import InstancePrice
from kit.cost.queueing import expected_runtime, young_daly_interval
from kit.cost.settings import CostSettings

__all__ = ["TrainingRun", "TrainingCost", "mtbf_hours", "training_cost"]


class TrainingRun(BaseModel):
    """One way of running the training work: expected wall time and cost."""

    pricing: str
    checkpoint_interval_s: float
    wall_s: float
    usd: float


class TrainingCost(BaseModel):
    instance: str
    work_s: float  # fine-tune + distillation compute, scaled to the instance's vCPUs
    finetune_s: float
    distill_s: float
    checkpoint_write_s: float
    checkpoint_write_source: str
    interval_params_s: float
    interval_optimal_s: float | None  # None: no spot interruption rate for the instance
    mtbf_h: float | None
    runs: list[TrainingRun]
    spot_saving_share: float | None  # 1 - spot (optimal interval) / on-demand


def mtbf_hours(interruptions_per_month: float, hours_per_month: float = 730.0) -> float:
    """Mean time between interruptions from a monthly interruption frequency (a probability per instance-month)."""
    if interruptions_per_month <= 0:
        return math.inf
    return hours_per_month / -math.log1p(-interruptions_per_month)


def training_cost(
    settings: CostSettings, *, train: TrainReport, bench: BenchReport, inst: InstancePrice
) -> TrainingCost:
    """Price fine-tuning (train.json) plus distillation (bench.json's distill.seconds) on `inst`.

    The measured times scale by vCPUs from the machine that ran them (the scaling assumption in capacity.py).
    The checkpoint write time is train.json's `train.checkpoint_write_s` when recorded, else the settings' figure."""
    tr = train.train
    cpus = tr.processes * tr.threads_per_process
    finetune_s = tr.train_time_s
    distill_s = float((bench.distill or {}).get("seconds", 0.0))
    work = (finetune_s + distill_s) * cpus / inst.vcpu
    recorded = tr.checkpoint_write_s  # measured by the finetune stage (None: no checkpoint was written)
    write = float(recorded) if recorded else settings.checkpoint_write_s
    source = (
        "reports/train.json train.checkpoint_write_s" if recorded else "assumption (params cost.checkpoint_write_s)"
    )
    interval = settings.checkpoint_every_steps * tr.train_time_s / max(tr.steps, 1) * cpus / inst.vcpu
    hour = 3600.0
    on_demand_wall = expected_runtime(work, interval_s=interval, write_s=write, mtbf_s=math.inf, restart_s=0)
    runs = [
        TrainingRun(
            pricing="on_demand",
            checkpoint_interval_s=interval,
            wall_s=on_demand_wall,
            usd=on_demand_wall / hour * inst.on_demand_usd_h,
        )
    ]
    optimal = mtbf = saving = None
    if inst.spot_usd_h is not None and inst.spot_interruption_per_month is not None:
        mtbf = mtbf_hours(inst.spot_interruption_per_month, settings.hours_per_month)
        optimal = young_daly_interval(write, mtbf * hour) if math.isfinite(mtbf) else math.inf
        for label, tau in (("spot, params interval", interval), ("spot, Young/Daly interval", min(optimal, work))):
            wall = expected_runtime(
                work, interval_s=tau, write_s=write, mtbf_s=mtbf * hour, restart_s=settings.restart_s
            )
            runs.append(
                TrainingRun(pricing=label, checkpoint_interval_s=tau, wall_s=wall, usd=wall / hour * inst.spot_usd_h)
            )
        saving = 1 - runs[-1].usd / runs[0].usd
    return TrainingCost(
        instance=inst.name,
        work_s=work,
        finetune_s=finetune_s,
        distill_s=distill_s,
        checkpoint_write_s=write,
        checkpoint_write_source=source,
        interval_params_s=interval,
        interval_optimal_s=optimal,
        mtbf_h=mtbf,
        runs=runs,
        spot_saving_share=saving,
    )
