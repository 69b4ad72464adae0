"""The monitor stage's plots: each drift statistic over the replayed windows against its calibrated threshold, the
predicted class shares with realized macro-F1, and the detection delay of every shift scenario."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kit.core.io import rel_path, save_figure
from kit.core.layout import LAYOUT
from kit.monitor.features import DEFAULT_FEATURES, EMBEDDING_FEATURE
from kit.monitor.report import MonitorReport, ScenarioResult

__all__ = ["lower_is_drift", "plot_statistics", "plot_class_shares", "plot_detection_delay", "write_plots"]

CONTROL_COLOUR = "grey"
# The report stores no method per feature: the default features' methods say it, and any other feature but the
# embedding's MMD^2 (a distance) is taken to be a p-value test, as every extra tabular feature of the kit is.
_LOWER_IS_DRIFT = {f.name: f.lower_is_drift for f in DEFAULT_FEATURES}
# A p-value of exactly 0 (a far-off window) cannot sit on a log axis: drawn at this floor instead.
P_FLOOR = 1e-16


def lower_is_drift(feature: str) -> bool:
    """True when a smaller statistic means more drift (a p-value: the default features' ks and chi-square tests,
    and any feature not named `embedding_mmd2`), False for the embedding's MMD^2 distance."""
    return _LOWER_IS_DRIFT.get(feature, feature != EMBEDDING_FEATURE)


def _features(report: MonitorReport) -> list[str]:
    """Every feature scored in any window: the default features in their order, the embedding, then the rest."""
    seen = {k for s in report.scenarios for w in s.windows for k in w.scores}
    order = [f.name for f in DEFAULT_FEATURES] + [EMBEDDING_FEATURE]
    return [n for n in order if n in seen] + sorted(seen - set(order))


def _palette() -> list[Any]:
    """The ten tab10 colours as RGBA tuples."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i) for i in range(10)]


def _colours(report: MonitorReport) -> dict[str, Any]:
    """A colour per scenario: grey for the control, the tab10 cycle for the others."""
    cycle = _palette()
    out: dict[str, Any] = {}
    for s in report.scenarios:
        out[s.name] = CONTROL_COLOUR if s.shift_starts_at is None else cycle[(len(out) - 1) % len(cycle)]
    return out


def _grid(n: int, ncols: int, size: tuple[float, float]) -> tuple[Any, list[Any]]:
    """A figure of `n` subplots, `ncols` wide, each `size` inches; unused cells hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(n, 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _shown(value: float, low: bool) -> float:
    """A statistic as drawn: p-values (`low`) floored at P_FLOOR for the log axis, distances as they are."""
    return max(value, P_FLOOR) if low else value


def _statistic_panel(ax: Any, report: MonitorReport, feature: str, colours: dict[str, Any]) -> None:
    """One feature: every scenario's statistic per window, its thresholds, shift starts and drift verdicts."""
    low = lower_is_drift(feature)
    # A threshold is infinite when the calibration replayed too few null windows to reach the level: nothing to draw.
    base = report.reference.thresholds.get(feature)
    base = base if base is not None and math.isfinite(base) else None
    for s in report.scenarios:
        colour = colours[s.name]
        pts = [(w.index, w.scores[feature], w) for w in s.windows if feature in w.scores]
        if not pts:
            continue
        xs = [i for i, _, _ in pts]
        ys = [_shown(v, low) for _, v, _ in pts]
        # NaN where a window has no score (not enough data), so the line breaks there instead of bridging it.
        line = [_shown(w.scores[feature], low) if feature in w.scores else math.nan for w in s.windows]
        ax.plot([w.index for w in s.windows], line, "-", lw=1.2, color=colour, label=s.name,
                zorder=3 if s.shift_starts_at is not None else 2)  # fmt: skip
        # Filled marker: this feature drifted in a window judged drift; hollow: the window drifted on another feature.
        for x, y, (_, _, w) in zip(xs, ys, pts, strict=True):
            if w.status == "drift":
                filled = feature in w.drifted
                ax.plot([x], [y], "o", ms=6, color=colour, mfc=colour if filled else "none", zorder=4)
        # The per-window thresholds only when they differ from the calibrated one (the level of BH moves them).
        th = [(w.index, w.thresholds[feature]) for w in s.windows if math.isfinite(w.thresholds.get(feature, math.inf))]
        if th and (base is None or any(abs(t - base) > 1e-12 * max(1.0, abs(base)) for _, t in th)):
            tx = [i for i, _ in th]
            ty = [_shown(t, low) for _, t in th]
            ax.step(tx, ty, where="mid", ls=":", lw=1, color=colour)
        if s.shift_starts_at is not None:
            ax.axvline(s.shift_starts_at, color=colour, ls="--", lw=0.8, alpha=0.7)
    if base is not None:
        ax.axhline(_shown(base, low), color="black", ls="--", lw=1, label="calibrated threshold")
    if low:
        y0, y1 = ax.dataLim.y0, ax.dataLim.y1
        if not (math.isfinite(y0) and math.isfinite(y1) and 0 < y0 and y1 > 1.01 * y0):  # about one value, or none
            top = y1 if math.isfinite(y1) and y1 > 0 else 1.0
            ax.set_ylim(top / 100, top * 10)
        ax.set_yscale("log")
    side = "p-value (drift: below the threshold)" if low else "distance (drift: above the threshold)"
    ax.set(title=feature, xlabel="window", ylabel=side)
    ax.grid(True, which="major", alpha=0.3)


def plot_statistics(report: MonitorReport, path: str | Path) -> Path:
    """Write one subplot per drift feature: each scenario's statistic over the window index (the control grey), the
    calibrated threshold (black dashed; dotted per scenario where a window's level moved it), a dashed vertical line
    where each scenario's shift starts, and a marker on every window judged drift (filled: this feature drifted;
    hollow: the window drifted on another feature). Returns the path.

    p-value features (see `lower_is_drift`) use a log axis and drift below the threshold, with p-values under
    `P_FLOOR` drawn at it; distances (the embedding's MMD^2) drift above it.

    Args:
        report: the monitor report (its scenarios' windows and the reference's thresholds).
        path: the PNG to write.
    """
    features = _features(report)
    colours = _colours(report)
    fig, axes = _grid(len(features), 3, (5.0, 3.6))
    for ax, feature in zip(axes, features, strict=False):
        _statistic_panel(ax, report, feature, colours)
    if not features:
        axes[0].text(0.5, 0.5, "no window was scored", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8,
                   bbox_to_anchor=(0.5, 1.0))  # fmt: skip
        fig.subplots_adjust(top=0.9)
    fig.suptitle(
        f"Drift statistics per window ({report.reference.method.upper()}, target false-alarm rate "
        f"{report.reference.target:g} per window)",
        y=1.03,
    )
    return save_figure(fig, path, tight=True, close=True)


def _shares_panel(ax: Any, s: ScenarioResult, classes: list[str]) -> None:
    """One scenario: stacked predicted class shares per window (a bar each), realized macro-F1 on a twin axis."""
    from matplotlib.ticker import MaxNLocator

    cycle = _palette()
    xs = [w.index for w in s.windows]
    bottom = [0.0] * len(xs)
    for k, c in enumerate(classes):
        share = [w.class_shares.get(c, 0.0) for w in s.windows]
        ax.bar(xs, share, bottom=bottom, width=0.9, color=cycle[k % len(cycle)], label=c, alpha=0.85)
        bottom = [b + v for b, v in zip(bottom, share, strict=True)]
    for w in s.windows:
        if w.status == "not enough data":  # no shares to show: say so rather than leave a silent gap
            ax.bar([w.index], [1.0], width=0.9, color="none", edgecolor="grey", hatch="xx", lw=0)
    if s.shift_starts_at is not None:
        ax.axvline(s.shift_starts_at - 0.5, color="black", ls="--", lw=1)
    ax.set(title=s.name, xlabel="window", ylabel="predicted class share", ylim=(0, 1))
    if xs:
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    f1 = [(w.index, w.macro_f1) for w in s.windows if w.macro_f1 is not None]
    twin = ax.twinx()
    twin.set_ylim(0, 1)
    twin.set_ylabel("realized macro-F1")
    if f1:
        twin.plot([i for i, _ in f1], [v for _, v in f1], "o-", color="black", lw=1.5, ms=3, label="macro-F1")
    else:
        twin.text(0.98, 0.04, "no delayed labels", ha="right", va="bottom", fontsize=8, transform=ax.transAxes)


def plot_class_shares(report: MonitorReport, path: str | Path) -> Path:
    """Write small multiples, one per scenario: the predicted class shares of each window (a stacked bar; hatched
    grey: not enough data), the realized macro-F1 on the delayed labels (black line, right axis; windows without
    labels left out) and a dashed line just before the first shifted window. Returns the path.

    Args:
        report: the monitor report.
        path: the PNG to write.
    """
    classes = sorted({c for s in report.scenarios for w in s.windows for c in w.class_shares})
    fig, axes = _grid(len(report.scenarios), 3, (5.0, 3.4))
    for ax, s in zip(axes, report.scenarios, strict=False):
        _shares_panel(ax, s, classes)
    if classes:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8), fontsize=8,
                   bbox_to_anchor=(0.5, 1.0))  # fmt: skip
        fig.subplots_adjust(top=0.88)
    fig.suptitle("Predicted class shares and realized macro-F1 per window", y=1.03)
    return save_figure(fig, path, tight=True, close=True)


def plot_detection_delay(report: MonitorReport, path: str | Path) -> Path:
    """Write one bar per shift scenario: its detection delay in windows (from the first shifted window to the first
    drift verdict; 0 = caught in the first shifted window). A scenario never detected gets a hatched bar as tall as
    its shifted windows, labelled "missed". The title gives the control's false-alarm rate. Returns the path.

    Args:
        report: the monitor report.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = _colours(report)
    shifts = [s for s in report.scenarios if s.shift_starts_at is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(shifts) + 2), 4.2))
    for i, s in enumerate(shifts):
        shifted = len(s.windows) - (s.shift_starts_at or 0)
        if s.detected and s.detection_delay is not None:
            ax.bar(i, s.detection_delay, color=colours[s.name], width=0.6)
            ax.annotate(str(s.detection_delay), (i, s.detection_delay), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=9)  # fmt: skip
        else:
            ax.bar(i, shifted, color="none", edgecolor=colours[s.name], hatch="//", width=0.6)
            ax.annotate("missed", (i, shifted), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=9)
    ax.set_xticks(range(len(shifts)), [s.name for s in shifts], rotation=20, ha="right")
    if not shifts:
        ax.text(0.5, 0.5, "no shift scenario", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("detection delay (windows)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    # The scale is the shifted windows a scenario has: a delay of 0 reads as "at once", not as an empty plot.
    ax.set_ylim(0, max((len(s.windows) - (s.shift_starts_at or 0) for s in shifts), default=1) + 0.5)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(
        f"Detection delay · control false-alarm rate {report.control_false_alarm_rate:.1%} over "
        f"{report.control_windows} windows (target {report.reference.target:g})",
        fontsize=10,
    )
    return save_figure(fig, path, tight=True, close=True)


def write_plots(report: MonitorReport, root: str | Path) -> list[str]:
    """Write the three plots at their LAYOUT paths under `root`; returns them project-relative (statistics, class
    shares, detection delay)."""
    root = Path(root).resolve()
    written = [
        plot_statistics(report, root / LAYOUT.monitor_statistics_plot),
        plot_class_shares(report, root / LAYOUT.monitor_class_shares_plot),
        plot_detection_delay(report, root / LAYOUT.monitor_delay_plot),
    ]
    return [rel_path(p, root) for p in written]
