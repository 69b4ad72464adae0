"""Cost against daily volume for every option: the curves, the crossover points between each pair ("X is cheaper
below N requests/day") and where the recommended option changes (the plot: kit.cost.plots)."""

from __future__ import annotations

import itertools
import math

import numpy as np
from pydantic import BaseModel

from kit.cost.capacity import Capacity
from kit.cost.compare import price_options, recommend
from kit.cost.options import OPTION_NAMES
from kit.cost.prices import PriceSheet
from kit.cost.settings import CostSettings

__all__ = ["Crossover", "Curves", "ChoiceChange", "cost_curves", "crossovers", "choice_changes"]


class Crossover(BaseModel):
    """Where two options' monthly costs cross: `cheaper_below` wins under `requests_per_day`, `cheaper_above` over."""

    cheaper_below: str
    cheaper_above: str
    requests_per_day: float
    text: str


class Curves(BaseModel):
    """Monthly cost and p99 verdict of every option on a log-spaced grid of requests/day."""

    requests_per_day: list[float]
    monthly_usd: dict[str, list[float]]
    p99_holds: dict[str, list[bool]]
    recommended: list[str | None]  # the cheapest option meeting the objective at each grid point


class ChoiceChange(BaseModel):
    """Between two grid volumes the recommended option changes from `below` to `above`, at about `requests_per_day`."""

    below: str | None
    above: str | None
    requests_per_day: float
    text: str


def cost_curves(settings: CostSettings, cap: Capacity, prices: PriceSheet) -> Curves:
    """Every option priced on `curve_points` log-spaced volumes (simulations of `curve_max_arrivals` arrivals)."""
    grid = np.geomspace(settings.curve_min_per_day, settings.curve_max_per_day, settings.curve_points)
    cost: dict[str, list[float]] = {n: [] for n in OPTION_NAMES}
    holds: dict[str, list[bool]] = {n: [] for n in OPTION_NAMES}
    recommended: list[str | None] = []
    for n in grid:
        options = price_options(settings.with_requests(float(n)), cap, prices, max_arrivals=settings.curve_max_arrivals)
        for opt in options:
            cost[opt.name].append(opt.monthly_usd)
            holds[opt.name].append(opt.p99_holds)
        best = recommend(options)
        recommended.append(best.name if best else None)
    return Curves(requests_per_day=[float(g) for g in grid], monthly_usd=cost, p99_holds=holds, recommended=recommended)


def _cross(grid: np.ndarray, ca: np.ndarray, cb: np.ndarray, *, i: int, j: int) -> float:
    """Volume where log-log interpolation between grid points i and j puts the two costs equal."""
    d0, d1 = math.log(ca[i] / cb[i]), math.log(ca[j] / cb[j])
    return math.exp(grid[i] + (grid[j] - grid[i]) * d0 / (d0 - d1))


def crossovers(curves: Curves) -> list[Crossover]:
    """Each point where one option's cost curve crosses another's, interpolated in log-log between grid points."""
    grid = np.log(np.asarray(curves.requests_per_day))
    found: list[Crossover] = []
    for a, b in itertools.combinations(curves.monthly_usd, 2):
        ca, cb = np.asarray(curves.monthly_usd[a]), np.asarray(curves.monthly_usd[b])
        if not (np.isfinite(ca).all() and np.isfinite(cb).all() and (ca > 0).all() and (cb > 0).all()):
            continue
        diff = np.log(ca) - np.log(cb)
        apart = np.flatnonzero(diff != 0)  # equal stretches (both at a floor) are not crossings by themselves
        for i, j in itertools.pairwise(apart):
            d0, d1 = diff[i], diff[j]
            if d0 * d1 > 0:
                continue
            x = _cross(grid, ca, cb, i=int(i), j=int(j))
            low, high = (a, b) if d0 < 0 else (b, a)
            text = f"{low} is cheaper than {high} below {x:,.0f} requests/day"
            found.append(Crossover(cheaper_below=low, cheaper_above=high, requests_per_day=x, text=text))
    return sorted(found, key=lambda c: c.requests_per_day)


def choice_changes(curves: Curves) -> list[ChoiceChange]:
    """Where the recommended option changes along the grid: at the two options' cost crossing when both meet the
    objective on both sides, else (an option starts or stops meeting it) at the geometric middle of the bracket."""
    grid = np.log(np.asarray(curves.requests_per_day))
    out = []
    for i, (a, b) in enumerate(itertools.pairwise(curves.recommended)):
        if a == b:
            continue
        j = i + 1
        both = a is not None and b is not None and all(curves.p99_holds[o][k] for o in (a, b) for k in (i, j))
        if a is not None and b is not None and both:
            ca, cb = np.asarray(curves.monthly_usd[a], dtype=float), np.asarray(curves.monthly_usd[b], dtype=float)
            x = _cross(grid, ca, cb, i=i, j=j)
        else:
            x = math.exp((grid[i] + grid[j]) / 2)
        why = "cost crossing" if both else "where the p99 verdicts change, between grid points"
        text = f"below ~{x:,.0f} requests/day the choice is {a or 'none'}, above it {b or 'none'} ({why})"
        out.append(ChoiceChange(below=a, above=b, requests_per_day=x, text=text))
    return out
