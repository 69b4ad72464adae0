"""The sweep's table (Markdown) and Pareto plot (macro-F1 against p50 latency and model size), and `sweep_report`, which
reads the experiments, writes both and returns what `kit sweep report` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kit.core.io import save_figure, write_text
from kit.optimize.sweep import SweepPick, SweepPoint, exp_show, pick_for_budget, sweep_points

__all__ = ["SweepReport", "sweep_table", "plot_pareto", "sweep_report"]


class SweepReport(BaseModel):
    """What one `kit sweep report` found and wrote."""

    points: list[SweepPoint]
    skipped: list[str]
    pick: SweepPick
    table: str
    plot: str
    table_path: str | None = None


def sweep_table(points: list[SweepPoint], pick: SweepPick | None = None) -> str:
    """One Markdown row per run, most accurate first: swept params, served variant, figures, Pareto and pick marks."""
    import pandas as pd

    chosen = pick.point.rev if pick and pick.point else None
    rows = [
        {
            "run": p.name,
            "layers": p.student_layers,
            "int8 base": p.int8_base,
            "per-channel": "yes" if p.int8_per_channel else "no",
            "max len": p.max_length,
            "served": p.variant or "?",
            "macro-F1": round(p.serve_f1, 4),
            "p50 ms": round(p.p50_ms, 2),
            "size MB": round(p.size_mb, 1),
            "x b32": round(p.speedup_b32, 2) if p.speedup_b32 is not None else None,
            "Pareto": "yes" if p.pareto else "",
            "pick": "<-" if p.rev == chosen else "",
        }
        for p in sorted(points, key=lambda p: (-p.serve_f1, p.p50_ms))
    ]
    return str(pd.DataFrame(rows).to_markdown(index=False))


def _label(p: SweepPoint) -> str:
    """The run's name and swept params in brief, e.g. "exp-1 (L3 plain pc 64)": pc = per-channel INT8."""
    return f"{p.name} (L{p.student_layers} {p.int8_base}{' pc' if p.int8_per_channel else ''} {p.max_length})"


def plot_pareto(points: list[SweepPoint], pick: SweepPick | None = None) -> Any:
    """Two panels sharing the macro-F1 axis: against p50 latency (colour: size) and against size (colour: latency).
    Pareto points (on all three) are filled, the others hollow; the budget is a dashed line, the pick ringed."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, other, xlabel in (
        (axes[0], "p50_ms", "size_mb", "p50 latency, batch 1 (ms)"),
        (axes[1], "size_mb", "p50_ms", "serving model size (MB)"),
    ):
        c = [getattr(p, other) for p in points]
        norm = plt.Normalize(min(c), max(c))
        on = [p for p in points if p.pareto]  # never empty: some point always survives
        off = [p for p in points if not p.pareto]
        sc = ax.scatter([getattr(p, key) for p in on], [p.serve_f1 for p in on], c=[getattr(p, other) for p in on],
                        cmap="viridis", norm=norm, s=60, edgecolors="black", zorder=3)  # fmt: skip
        ax.scatter([getattr(p, key) for p in off], [p.serve_f1 for p in off], s=60, facecolors="none", zorder=3,
                   edgecolors=[plt.get_cmap("viridis")(norm(getattr(p, other))) for p in off])  # fmt: skip
        front = sorted((p for p in points if p.pareto), key=lambda p: getattr(p, key))
        ax.plot([getattr(p, key) for p in front], [p.serve_f1 for p in front], "k--", lw=0.8, alpha=0.5)
        for p in points:
            ax.annotate(_label(p), (getattr(p, key), p.serve_f1), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if pick and pick.point:
            ax.scatter([getattr(pick.point, key)], [pick.point.serve_f1], s=260, facecolors="none", edgecolors="red")
        fig.colorbar(sc, ax=ax, label="size (MB)" if other == "size_mb" else "p50 (ms)")
        ax.margins(x=0.35)  # room for the labels right of the rightmost points
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if pick and pick.budget_ms is not None:
        axes[0].axvline(pick.budget_ms, color="red", ls=":", lw=1, label=f"budget {pick.budget_ms:g} ms")
        axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("test macro-F1, serving model")
    fig.suptitle("model-size sweep: filled = Pareto-optimal (macro-F1, latency, size); red ring = pick")
    return fig


def sweep_report(
    cwd: str | Path,
    plot_path: str | Path,
    table_path: str | Path | None = None,
    budget_ms: float | None = None,
    tolerance_pts: float = 0.5,
    rows: list[dict[str, Any]] | None = None,
) -> SweepReport:
    """Read the experiments, pick, and write the Pareto plot (and the table, when a path is given).

    Args:
        cwd: the project (a Git + DVC repository).
        plot_path, table_path: where the PNG and the Markdown go.
        budget_ms, tolerance_pts: see pick_for_budget.
        rows: `dvc exp show --json` already parsed (None: run it in cwd).
    """
    points, skipped = sweep_points(exp_show(cwd) if rows is None else rows, cwd=cwd)
    pick = pick_for_budget(points, budget_ms, tolerance_pts)
    table = sweep_table(points, pick)
    save_figure(plot_pareto(points, pick), plot_path, close=True)
    if table_path is not None:
        write_text(table_path, table + "\n\n" + pick.reason + "\n")
    return SweepReport(
        points=points,
        skipped=skipped,
        pick=pick,
        table=table,
        plot=str(plot_path),
        table_path=None if table_path is None else str(table_path),
    )
