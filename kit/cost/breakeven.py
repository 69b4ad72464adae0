"""All options at one traffic profile, their cost over a range of daily volumes, the crossover points between each
pair ("X is cheaper below N requests/day"), the recommendation, and the log-log break-even plot."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from kit.cost.capacity import Capacity
from kit.cost.options import OPTION_NAMES, OptionCost, always_on, hpa, make_setup, scale_to_zero, spot
from kit.cost.pay_per_use import batch_job, serverless
from kit.cost.prices import PriceSheet
from kit.cost.settings import CostSettings

__all__ = ["Crossover", "price_options", "cost_curves", "crossovers", "recommend", "plot_breakeven"]


class Crossover(BaseModel):
    """Where two options' monthly costs cross: `cheaper_below` wins under `requests_per_day`, `cheaper_above` over."""

    cheaper_below: str
    cheaper_above: str
    requests_per_day: float
    text: str


def price_options(
    settings: CostSettings, cap: Capacity, prices: PriceSheet, *, max_arrivals: int | None = None
) -> list[OptionCost]:
    """Every option at the settings' traffic, in OPTION_NAMES order (the HPA simulation also drives spot)."""
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


def cost_curves(settings: CostSettings, cap: Capacity, prices: PriceSheet) -> dict[str, list[float]]:
    """Monthly cost of every option on a log-spaced grid of requests/day (key `requests_per_day` holds the grid)."""
    grid = np.geomspace(settings.curve_min_per_day, settings.curve_max_per_day, settings.curve_points)
    curves: dict[str, list[float]] = {"requests_per_day": [float(g) for g in grid]}
    for name in OPTION_NAMES:
        curves[name] = []
    for n in grid:
        for opt in price_options(
            settings.with_requests(float(n)), cap, prices, max_arrivals=settings.curve_max_arrivals
        ):
            curves[opt.name].append(opt.monthly_usd)
    return curves


def crossovers(curves: dict[str, list[float]]) -> list[Crossover]:
    """Each point where one option's cost curve crosses another's, interpolated in log-log between grid points."""
    grid = np.log(np.asarray(curves["requests_per_day"]))
    names = [k for k in curves if k != "requests_per_day"]
    found: list[Crossover] = []
    for a, b in itertools.combinations(names, 2):
        ca, cb = np.asarray(curves[a]), np.asarray(curves[b])
        if not (np.isfinite(ca).all() and np.isfinite(cb).all() and (ca > 0).all() and (cb > 0).all()):
            continue
        diff = np.log(ca) - np.log(cb)
        apart = np.flatnonzero(diff != 0)  # equal stretches (both at a floor) are not crossings by themselves
        for i, j in itertools.pairwise(apart):
            d0, d1 = diff[i], diff[j]
            if d0 * d1 > 0:
                continue
            x = math.exp(grid[i] + (grid[j] - grid[i]) * d0 / (d0 - d1))
            low, high = (a, b) if d0 < 0 else (b, a)
            text = f"{low} is cheaper than {high} below {x:,.0f} requests/day"
            found.append(Crossover(cheaper_below=low, cheaper_above=high, requests_per_day=x, text=text))
    return sorted(found, key=lambda c: c.requests_per_day)


def recommend(options: list[OptionCost]) -> OptionCost | None:
    """The cheapest option whose p99 holds (None: none meets the objective)."""
    ok = [o for o in options if o.p99_holds and math.isfinite(o.monthly_usd)]
    return min(ok, key=lambda o: o.monthly_usd) if ok else None


def plot_breakeven(
    curves: dict[str, list[float]], marks: list[Crossover], path: str | Path, *, at: float | None = None
) -> Path:
    """Write the log-log cost vs requests/day plot with the crossover points marked; returns the path.

    Args:
        curves: cost_curves' result.
        marks: crossovers to mark (usually those of the recommended option).
        path: the PNG to write.
        at: the profile's requests/day, drawn as a vertical line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = curves["requests_per_day"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, ys in curves.items():
        if name != "requests_per_day":
            ax.plot(grid, ys, marker="o", ms=3, label=name)
    for m in marks:
        y = float(np.interp(np.log(m.requests_per_day), np.log(grid), np.log(curves[m.cheaper_below])))
        ax.plot([m.requests_per_day], [math.exp(y)], "kx", ms=9)
    if at:
        ax.axvline(at, color="grey", ls="--", lw=1, label="this profile")
    ax.set(xscale="log", yscale="log", xlabel="requests per day", ylabel="$ per month", title="Break-even")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
