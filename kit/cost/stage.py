"""The cost stage as one function: read the measured reports and the price sheet, price every option, write
reports/cost.json and its plots. Notebook 06 calls run_cost and only shows what it returns."""

from __future__ import annotations

from pathlib import Path

from kit.core.io import rel_path
from kit.core.layout import LAYOUT
from kit.core.params import Params
from kit.core.reports import BenchReport, ServeReport, TrainReport, read_report, write_report
from kit.cost.options import OPTION_NAMES
from kit.cost.plots import plot_breakeven, plot_sensitivity
from kit.cost.prices import read_prices
from kit.cost.report import CostReport, assemble_cost
from kit.cost.settings import CostSettings

__all__ = ["run_cost"]


def _say(message: str) -> None:
    print(f"cost: {message}", flush=True)


def _write_plots(report: CostReport, root: Path) -> list[str]:
    """The break-even and sensitivity PNGs (LAYOUT paths); returns them project-relative."""
    at = report.settings.traffic.requests_per_day
    mine = report.recommendation.option
    # Only the recommended option's crossings are marked: all pairs would crowd the plot (all are in the report).
    marks = [c for c in report.crossovers if mine in (c.cheaper_below, c.cheaper_above)]
    paths = [
        plot_breakeven(report.curves, marks, root / LAYOUT.cost_breakeven_plot, at=at),
        plot_sensitivity(report.curves, report.recommendation.by_price, root / LAYOUT.cost_sensitivity_plot, at=at,
                         hours_per_month=report.settings.hours_per_month),
    ]  # fmt: skip
    return [rel_path(p, root) for p in paths]


def run_cost(params: Params, root: str | Path) -> CostReport:
    """Everything notebook 06 does: price the options from the measured reports, write reports/cost.json and plots.

    Args:
        params: validated params (the cost section is read).
        root: project root; reports, the price sheet (cost.prices) and a traffic trace are relative to it.

    Returns:
        The report as written to reports/cost.json.

    Raises:
        ReportError: reports/serve.json, bench.json or train.json is missing, stale or lacks a field.
        CostError: the price sheet or the traffic trace is invalid, or a named price row does not exist.
    """
    root = Path(root).resolve()
    settings = CostSettings.from_params(params.cost)
    run = settings
    if settings.traffic.trace:  # the library reads the trace as given: resolve it against the project
        trace = str(root / settings.traffic.trace)
        run = settings.model_copy(update={"traffic": settings.traffic.model_copy(update={"trace": trace})})
    serve = read_report(root / LAYOUT.serve_report, ServeReport)
    bench = read_report(root / LAYOUT.bench_report, BenchReport)
    train = read_report(root / LAYOUT.train_report, TrainReport)
    prices = read_prices(root / settings.prices)
    t = settings.traffic
    _say(f"pricing {len(OPTION_NAMES)} options on {settings.instance} at {t.requests_per_day:,.0f} requests/day "
         f"(p99 objective {t.p99_objective_ms:g} ms); break-even over {settings.curve_points} volumes")  # fmt: skip
    report = assemble_cost(run, serve=serve, bench=bench, train=train, prices=prices)
    report.settings = settings  # as params.yaml spells it: no machine path
    report.prices["path"] = rel_path(root / settings.prices, root)
    if settings.checkpoint_every_steps != params.finetune.save_steps:
        report.warnings.append(
            f"cost.checkpoint_every_steps ({settings.checkpoint_every_steps}) is not finetune.save_steps "
            f"({params.finetune.save_steps}): the spot training cost prices another interval than the one trained with"
        )
    for size in report.pod_sizes:
        _say(f"pod of {size.vcpus} vCPU ({size.pod}): {size.texts_per_s_per_vcpu:,.1f} texts/s per vCPU, "
             f"${size.usd_per_million_at_full_load:,.4f} per 1M at full load ({size.deploy_with})")  # fmt: skip
    rec = report.recommendation
    if rec.option is None:
        _say(rec.reason)
    else:
        _say(f"recommended: {rec.option}, ${rec.monthly_usd:,.2f}/month, ${rec.usd_per_million:,.2f} per 1M")
    for w in report.warnings:
        _say(f"warning: {w}")
    report.plots = _write_plots(report, root)
    path = write_report(root / LAYOUT.cost_report, report)
    _say(f"wrote {rel_path(path, root)} and {', '.join(report.plots)}")
    return report
