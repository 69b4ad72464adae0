"""The load test's goals, judged on its summary: the server's share of the bare-model ceiling at the plan's concurrency
with p99 within target, and micro-batching's gain over max batch 1 at a chosen level and at every level from a floor."""

from __future__ import annotations

from typing import Any

__all__ = ["judge_goals", "saturated"]


def _goal(name: str, op: str, threshold: float, value: float | None, where: str) -> dict[str, Any]:
    met = value is not None and (value >= threshold if op == ">=" else value <= threshold)
    return {"name": name, "target": f"{op} {threshold:g}", "threshold": threshold, "value": value, "met": bool(met),
            "where": where if value is not None else f"{where} (not measured)"}  # fmt: skip


def judge_goals(summary: dict[str, Any], deploy: Any) -> list[dict[str, Any]]:
    """Each goal with its target, the measured value, whether it is met and where it was measured.

    Args:
        summary: `summarize`'s figures (ratio_concurrency, server_over_bare, p99_ms_at_ratio, batching_gain).
        deploy: DeployParams (goal_* thresholds, p99_target_ms).

    Returns:
        Rows of name, target, threshold, value, met, where (kit.core.reports.Goal).
    """
    d = deploy
    c = summary["ratio_concurrency"]
    at = f"{c} clients ({summary['ratio_concurrency_rule']})"
    gains = {g["concurrency"]: g for g in summary["batching_gain"]}
    gc = d.goal_gain_concurrency
    floor = [g for g in gains.values() if g["concurrency"] >= d.goal_min_gain_from]
    low = min(floor, key=lambda g: g["ratio"], default=None)
    return [
        _goal("server_over_bare", ">=", d.goal_server_over_bare, summary["server_over_bare"],
              f"{at}; bare = best rate over batch sizes and bucketing"),
        _goal("p99_ms_at_ratio", "<=", d.p99_target_ms, summary["p99_ms_at_ratio"], at),
        _goal(f"batching_over_nobatch_at_{gc}", ">=", d.goal_batching_gain,
              gains[gc]["ratio"] if gc in gains else None, f"{gc} clients"),
        _goal(f"batching_over_nobatch_min_from_{d.goal_min_gain_from}", ">=", d.goal_min_gain,
              low["ratio"] if low else None,
              f"lowest at {low['concurrency']} clients of {sorted(g['concurrency'] for g in floor)}" if low
              else f"levels >= {d.goal_min_gain_from}"),
    ]  # fmt: skip


def saturated(rows: list[dict[str, Any]], tolerance: float) -> bool:
    """True when the last level gained at most `tolerance` (a fraction) of throughput over the one before while its
    p99 rose: more clients only queue longer, so higher levels would measure the same rate at worse latency."""
    if len(rows) < 2:
        return False
    prev, last = rows[-2], rows[-1]
    if last["p99_ms"] is None or prev["p99_ms"] is None:
        return False
    return last["throughput_rps"] <= prev["throughput_rps"] * (1 + tolerance) and last["p99_ms"] > prev["p99_ms"]
