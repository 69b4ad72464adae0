"""The pod-based options priced for one traffic profile: always-on, HPA, spot with an on-demand floor, scale-to-zero;
each with $/month, $ per 1M predictions, replicas at peak, idle share and whether the p99 objective holds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from kit.cost.capacity import Capacity, pods_per_instance
from kit.cost.prices import FunctionPrice, InstancePrice, PriceSheet, ScaleToZero
from kit.cost.settings import CostSettings
from kit.cost.simulate import Autoscaler, SimResult, simulate
from kit.cost.traffic import hourly_rates

__all__ = ["OptionCost", "Setup", "make_setup", "always_on", "hpa", "spot", "scale_to_zero", "OPTION_NAMES"]

OPTION_NAMES = ["always_on", "hpa", "spot", "scale_to_zero", "serverless", "batch"]


class OptionCost(BaseModel):
    """One option at one traffic profile. `p99_ms` is the estimated p99 latency the option gives."""

    name: str
    monthly_usd: float
    usd_per_million: float
    replicas_at_peak: int
    idle_share: float
    p99_ms: float
    p99_holds: bool
    cold_share: float = 0.0
    cold_latency_ms: float | None = None
    notes: list[str] = []
    simulation: SimResult | None = None


@dataclass(frozen=True)
class Setup:
    """What every option reads: settings, measured capacity, the chosen price rows and the day's rates."""

    settings: CostSettings
    cap: Capacity
    instance: InstancePrice
    function: FunctionPrice
    kpa: ScaleToZero
    pods_per_node: int
    rates: np.ndarray  # requests/s per slice of the day

    @property
    def pod_hour_usd(self) -> float:
        return self.instance.on_demand_usd_h / self.pods_per_node

    @property
    def pod_requests_per_s(self) -> float:
        return self.cap.pod_texts_per_s / self.settings.traffic.texts_per_request

    @property
    def predictions_per_month(self) -> float:
        t = self.settings.traffic
        return t.requests_per_day * t.texts_per_request * self.settings.hours_per_month / 24.0

    def option(self, name: str, monthly: float, **fields: Any) -> OptionCost:
        per_m = monthly / (self.predictions_per_month / 1e6)
        return OptionCost(name=name, monthly_usd=round(monthly, 4), usd_per_million=round(per_m, 6), **fields)


def make_setup(settings: CostSettings, cap: Capacity, prices: PriceSheet) -> Setup:
    """Look up the settings' price rows and build the day's rates."""
    inst = prices.instance(settings.instance)
    return Setup(
        settings=settings,
        cap=cap,
        instance=inst,
        function=prices.function(settings.function),
        kpa=prices.scale_to_zero_model(settings.scale_to_zero),
        pods_per_node=pods_per_instance(cap, inst),
        rates=hourly_rates(settings.traffic),
    )


def always_on(s: Setup) -> OptionCost:
    """On-demand pods sized for the peak hour times the burst, all day; p99 holds by the measurement's construction."""
    peak = float(s.rates.max()) * s.settings.traffic.burst
    replicas = max(s.settings.min_replicas, math.ceil(peak / s.pod_requests_per_s))
    monthly = replicas * s.pod_hour_usd * s.settings.hours_per_month
    idle = 1 - float(s.rates.mean()) / (replicas * s.pod_requests_per_s)
    p99 = s.cap.pod_p99_ms
    return s.option(
        "always_on",
        monthly,
        replicas_at_peak=replicas,
        idle_share=idle,
        p99_ms=p99,
        p99_holds=p99 <= s.settings.traffic.p99_objective_ms,
    )


def _simulate(s: Setup, scaler: Autoscaler, max_arrivals: int) -> SimResult:
    # A pod is `pod_concurrency` slots (the load level that met the objective); Little's law gives each slot's time.
    slots = s.cap.pod_concurrency
    return simulate(
        s.rates,
        scaler=scaler,
        slots=slots,
        service_s=slots / s.pod_requests_per_s,
        max_arrivals=max_arrivals,
        seed=s.settings.seed,
    )


def _autoscaler(
    s: Setup, kind: Literal["hpa", "kpa"], min_pods: int, *, tick_s: float, window_s: float, down_delay_s: float
) -> Autoscaler:
    """The settings' autoscaler of `kind`; a new pod serves after the platform start plus the measured cold start."""
    st = s.settings
    return Autoscaler(
        kind=kind,
        min_pods=min_pods,
        max_pods=st.max_replicas,
        tick_s=tick_s,
        window_s=window_s,
        target_utilization=st.target_utilization,
        down_delay_s=down_delay_s,
        start_s=st.platform_start_s + s.cap.cold_start_s,
    )


def _from_sim(s: Setup, name: str, sim: SimResult, *, monthly: float, holds: bool = True, **extra: Any) -> OptionCost:
    """An option priced on a simulated pool: p99 = the measured in-pod p99 at the sized level plus the simulated p99
    of waiting (queue and cold starts); replicas and idle share from the simulation."""
    p99 = s.cap.pod_p99_ms + sim.p99_wait_ms
    return s.option(
        name,
        monthly,
        replicas_at_peak=sim.peak_pods,
        idle_share=sim.idle_share,
        p99_ms=p99,
        p99_holds=holds and p99 <= s.settings.traffic.p99_objective_ms,
        **extra,
    )


def hpa(s: Setup, *, max_arrivals: int) -> tuple[OptionCost, SimResult]:
    """On-demand pods following the diurnal curve under the HPA (simulated); the simulation is returned for spot."""
    st = s.settings
    scaler = _autoscaler(
        s, "hpa", st.min_replicas, tick_s=st.hpa_sync_s, window_s=st.hpa_window_s, down_delay_s=st.hpa_downscale_s
    )
    sim = _simulate(s, scaler, max_arrivals)
    monthly = sim.mean_pods * s.pod_hour_usd * st.hours_per_month
    return _from_sim(s, "hpa", sim, monthly=monthly, simulation=sim), sim


def spot(s: Setup, sim: SimResult) -> OptionCost:
    """The HPA's pods with `spot_on_demand_floor` of them on on-demand and the rest on spot instances."""
    st = s.settings
    if s.instance.spot_usd_h is None:
        return _from_sim(s, "spot", sim, monthly=math.inf, holds=False, notes=[f"{s.instance.name} has no spot price"])
    floor = min(st.spot_on_demand_floor, sim.mean_pods)
    spot_pod_h = s.instance.spot_usd_h / s.pods_per_node
    monthly = (floor * s.pod_hour_usd + (sim.mean_pods - floor) * spot_pod_h) * st.hours_per_month
    # Without an on-demand pod a spot reclaim can leave no pod at all: the objective is not held then.
    notes = [f"{floor:g} pod(s) on on-demand keep serving through a spot reclaim (2-minute notice on AWS)"]
    return _from_sim(s, "spot", sim, monthly=monthly, holds=floor >= 1, notes=notes)


def scale_to_zero(s: Setup, *, max_arrivals: int) -> OptionCost:
    """Knative (KPA) with the sheet's min scale, stable window and grace period; cold starts from the simulation."""
    st, k = s.settings, s.kpa
    scaler = _autoscaler(
        s, "kpa", k.min_scale, tick_s=st.kpa_tick_s, window_s=k.stable_window_s, down_delay_s=k.grace_period_s
    )
    sim = _simulate(s, scaler, max_arrivals)
    monthly = sim.mean_pods * s.pod_hour_usd * st.hours_per_month
    cold_ms = None if sim.cold_wait_mean_s is None else sim.cold_wait_mean_s * 1000 + s.cap.pod_p99_ms
    extra: dict[str, Any] = {"cold_share": sim.cold_share, "cold_latency_ms": cold_ms, "simulation": sim}
    return _from_sim(s, "scale_to_zero", sim, monthly=monthly, **extra)
