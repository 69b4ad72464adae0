"""The cost stage's plots: log-log break-even (cost vs requests/day, crossovers marked) and the sensitivity of the
recommended option to traffic and instance prices."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kit.core.io import save_figure
from kit.cost.breakeven import Crossover, Curves
from kit.cost.compare import PricePoint

__all__ = ["plot_breakeven", "plot_sensitivity"]


def plot_breakeven(curves: Curves, marks: list[Crossover], path: str | Path, *, at: float | None = None) -> Path:
    """Write the log-log cost vs requests/day plot with the crossover points marked; returns the path.

    Args:
        curves: cost_curves' result (hollow markers: the p99 objective is not met there).
        marks: crossovers to mark (usually those of the recommended option).
        path: the PNG to write.
        at: the profile's requests/day, drawn as a vertical line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.asarray(curves.requests_per_day)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, ys in curves.monthly_usd.items():
        (line,) = ax.plot(grid, ys, lw=1.5, label=name)
        ok = np.asarray(curves.p99_holds[name])
        # Filled where the option meets the p99 objective, hollow where it does not.
        ax.plot(grid[ok], np.asarray(ys)[ok], "o", ms=4, color=line.get_color())
        ax.plot(grid[~ok], np.asarray(ys)[~ok], "o", ms=4, mfc="none", color=line.get_color())
    for m in marks:
        y = float(np.interp(np.log(m.requests_per_day), np.log(grid), np.log(curves.monthly_usd[m.cheaper_below])))
        ax.plot([m.requests_per_day], [math.exp(y)], "kx", ms=9)
    if at:
        ax.axvline(at, color="grey", ls="--", lw=1, label="this profile")
    ax.set(xscale="log", yscale="log", xlabel="requests per day", ylabel="$ per month", title="Break-even")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, tight=True, close=True)


def _per_million(monthly_usd: float, per_day: float, *, days: float) -> float:
    """$ per 1M requests of a monthly bill at `per_day` requests/day."""
    return monthly_usd / (per_day * days) * 1e6


def plot_sensitivity(
    curves: Curves, by_price: list[PricePoint], path: str | Path, *, at: float, hours_per_month: float = 730.0
) -> Path:
    """Write a two-panel PNG: left, $ per 1M requests of the recommended option along traffic (marker per option);
    right, the recommended option's $/month at the profile's traffic with instance prices scaled. Returns the path.

    Args:
        curves: cost_curves' result (its `recommended` option at each volume).
        by_price: price_sensitivity's result at the profile's traffic.
        path: the PNG to write.
        at: the profile's requests/day (a vertical line on the left panel).
        hours_per_month: the billing month, to turn $/month into $ per request.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = hours_per_month / 24.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    grid = np.asarray(curves.requests_per_day)
    names = sorted({n for n in curves.recommended if n})
    for name in names:
        idx = [i for i, n in enumerate(curves.recommended) if n == name]
        ys = [_per_million(curves.monthly_usd[name][i], grid[i], days=days) for i in idx]
        # Markers only: an option recommended on two separate stretches must not look continuous in between.
        left.plot(grid[idx], ys, "o", ms=6, label=name)
    left.axvline(at, color="grey", ls="--", lw=1, label="this profile")
    left.set(xscale="log", yscale="log", xlabel="requests per day", ylabel="$ per 1M requests",
             title="Recommended option vs traffic")  # fmt: skip
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    pts = [p for p in by_price if p.monthly_usd is not None]
    right.plot([p.factor for p in pts], [p.monthly_usd for p in pts], "o-", color="black")
    for p in pts:
        right.annotate(p.option or "none", (p.factor, p.monthly_usd), textcoords="offset points", xytext=(4, 6),
                       fontsize=8)  # fmt: skip
    right.axvline(1.0, color="grey", ls="--", lw=1)
    right.set_xscale("log")
    right.set_xticks([p.factor for p in by_price], [f"x{p.factor:g}" for p in by_price])
    right.minorticks_off()
    right.set(xlabel="instance price x (on demand and spot)", ylabel="$ per month",
              title="Recommended option vs instance price")  # fmt: skip
    right.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path, tight=True, close=True)
