"""Every option at one traffic profile, the recommendation (cheapest that meets the p99 objective), and how the
recommendation moves when the instance prices do (the price half of the sensitivity; traffic is break-even's)."""

from __future__ import annotations

import math

from pydantic import BaseModel

from kit.cost.capacity import Capacity
from kit.cost.options import OptionCost, always_on, hpa, make_setup, scale_to_zero, spot
from kit.cost.pay_per_use import batch_job, serverless
from kit.cost.prices import PriceSheet
from kit.cost.settings import CostSettings

__all__ = ["PricePoint", "price_options", "recommend", "scale_prices", "price_sensitivity"]


class PricePoint(BaseModel):
    """The recommendation with every instance price (on demand and spot) multiplied by `factor`."""

    factor: float
    option: str | None
    monthly_usd: float | None


def price_options(
    settings: CostSettings, cap: Capacity, prices: PriceSheet, *, max_arrivals: int | None = None
) -> list[OptionCost]:
    """Every option at the settings' traffic, in OPTION_NAMES order (the HPA simulation also drives spot).

    Args:
        settings: traffic and model settings.
        cap: the measured capacity.
        prices: the price sheet.
        max_arrivals: simulation size (default: settings.sim_max_arrivals).
    """
    setup = make_setup(settings, cap, prices)
    arrivals = max_arrivals or settings.sim_max_arrivals
    hpa_cost, sim = hpa(setup, max_arrivals=arrivals)
    return [
        always_on(setup),
        hpa_cost,
        spot(setup, sim),
        scale_to_zero(setup, max_arrivals=arrivals),
        serverless(setup),
        batch_job(setup),
    ]


def recommend(options: list[OptionCost]) -> OptionCost | None:
    """The cheapest option whose p99 holds (None: none meets the objective)."""
    ok = [o for o in options if o.p99_holds and math.isfinite(o.monthly_usd)]
    return min(ok, key=lambda o: o.monthly_usd) if ok else None


def scale_prices(prices: PriceSheet, factor: float) -> PriceSheet:
    """The sheet with every instance's on-demand and spot price multiplied by `factor`."""
    rows = [
        r.model_copy(
            update={
                "on_demand_usd_h": r.on_demand_usd_h * factor,
                "spot_usd_h": None if r.spot_usd_h is None else r.spot_usd_h * factor,
            }
        )
        for r in prices.instances
    ]
    return prices.model_copy(update={"instances": rows})


def price_sensitivity(
    settings: CostSettings, cap: Capacity, prices: PriceSheet, *, factors: tuple[float, ...] = (0.25, 0.5, 1, 2, 4)
) -> list[PricePoint]:
    """The recommendation at the settings' traffic with instance prices scaled by each factor (function prices kept)."""
    out = []
    for f in factors:
        best = recommend(
            price_options(settings, cap, scale_prices(prices, f), max_arrivals=settings.curve_max_arrivals)
        )
        out.append(PricePoint(factor=f, option=best and best.name, monthly_usd=best and best.monthly_usd))
    return out
