"""The cost stage: measured throughput (reports/serve.json, bench.json, train.json) turned into dollars per option,
break-even volumes, a recommendation and the training cost on demand vs spot. `run_cost` is the stage.

The public names below load their module on first use, so importing the package stays cheap (no SimPy, SciPy or
matplotlib until a function is called)."""

from __future__ import annotations

from kit.core.lazy import lazy_api

# name -> module that defines it
_API = {
    "run_cost": "kit.cost.stage",
    "assemble_cost": "kit.cost.report",
    "plot_sensitivity": "kit.cost.plots",
    "CostReport": "kit.cost.report",
    "Recommendation": "kit.cost.report",
    "CostSettings": "kit.cost.settings",
    "TrafficProfile": "kit.cost.traffic",
    "hourly_rates": "kit.cost.traffic",
    "CostError": "kit.cost.errors",
    "PriceSheet": "kit.cost.prices",
    "read_prices": "kit.cost.prices",
    "Capacity": "kit.cost.capacity",
    "measure_capacity": "kit.cost.capacity",
    "OptionCost": "kit.cost.options",
    "price_options": "kit.cost.compare",
    "recommend": "kit.cost.compare",
    "price_sensitivity": "kit.cost.compare",
    "cost_curves": "kit.cost.breakeven",
    "crossovers": "kit.cost.breakeven",
    "choice_changes": "kit.cost.breakeven",
    "plot_breakeven": "kit.cost.plots",
    "Autoscaler": "kit.cost.simulate",
    "simulate": "kit.cost.simulate",
    "erlang_c": "kit.cost.queueing",
    "young_daly_interval": "kit.cost.queueing",
    "training_cost": "kit.cost.training",
}

__all__ = list(_API)

__getattr__, __dir__ = lazy_api(__name__, _API)
