"""The model-size sweep read back: each DVC experiment's optimize params and headline figures from `dvc exp show --json`,
their Pareto front on macro-F1, latency and size, and the run the kit would serve under a latency budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kit.core.errors import KitError, ReportError
from kit.core.layout import LAYOUT
from kit.core.params import ModelParams, OptimizeParams

__all__ = ["SweepPoint", "SweepPick", "exp_show", "served_variant", "sweep_points", "pareto_front", "pick_for_budget"]

METRICS_FILE = f"{LAYOUT.metrics_dir}/optimize.json"
# The optimize headline figures a point needs (kit.core.headline): accuracy, latency and size of the served model.
NEEDED = ("serve_f1", "p50_ms", "size_mb")


class SweepPoint(BaseModel):
    """One finished run (a commit or an experiment): the swept params and its served model's figures."""

    name: str
    rev: str
    student_layers: int  # the depth: a count, or the length of a layer list
    int8_base: str
    int8_per_channel: bool
    max_length: int
    variant: str | None = None  # the served variant, when the run's bench report can be read from Git
    serve_f1: float
    p50_ms: float
    size_mb: float
    speedup_b1: float | None = None
    speedup_b32: float | None = None
    f1_drop_pts: float | None = None
    pareto: bool = False


class SweepPick(BaseModel):
    """The run the kit would serve under a latency budget, and why (None: nothing meets the budget)."""

    point: SweepPoint | None
    budget_ms: float | None
    tolerance_pts: float
    reason: str


def exp_show(cwd: str | Path = ".") -> list[dict[str, Any]]:
    """`dvc exp show --json` in `cwd` (this interpreter's DVC): the baseline commit and its experiments.

    Raises:
        KitError: DVC failed (not a DVC/Git project, say); its message is quoted.
    """
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise KitError(f"`dvc exp show --json` failed in {Path(cwd).resolve()}: {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout)


def _records(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Every (record, state) in exp show's JSON: baseline commits, then their experiments (state from the executor;
    a finished experiment has none). The workspace row is left out: it repeats the commit or experiment applied."""
    out: list[tuple[dict[str, Any], str]] = []
    for row in rows:
        if row.get("rev") != "workspace":
            out.append((row, "commit"))
        for exp in row.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state") or "success"
            out += [(rev, state) for rev in exp.get("revs") or []]
    return out


def _depth(value: Any) -> int:
    return len(value) if isinstance(value, list) else int(value)


def _point(rec: dict[str, Any], variant: str | None) -> SweepPoint | str:
    """A SweepPoint from one exp show record, or why it is left out."""
    data = rec.get("data") or {}
    metrics = ((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data") or {}
    missing = [k for k in NEEDED if k not in metrics]
    if rec.get("error") or missing:
        return f"no optimize headline ({', '.join(missing) or 'error'})"
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    opt, model = params.get("optimize") or {}, params.get("model") or {}

    def get(section: dict[str, Any], schema: type[BaseModel], key: str) -> Any:
        field = schema.model_fields[key]  # the schema default where the run's params.yaml leaves the key out
        return section[key] if key in section else field.get_default(call_default_factory=True)

    return SweepPoint(
        name=rec.get("name") or rec["rev"][:7],
        rev=rec["rev"],
        student_layers=_depth(get(opt, OptimizeParams, "student_layers")),
        int8_base=get(opt, OptimizeParams, "int8_base"),
        int8_per_channel=get(opt, OptimizeParams, "int8_per_channel"),
        max_length=get(model, ModelParams, "max_length"),
        variant=variant,
        **{k: metrics.get(k) for k in (*NEEDED, "speedup_b1", "speedup_b32", "f1_drop_pts")},
    )


def served_variant(rev: str, cwd: str | Path = ".") -> str | None:
    """The variant a run served, from its committed bench report (DVC commits cache: false outputs with the
    experiment); None when Git does not hold it."""
    res = subprocess.run(["git", "show", f"{rev}:{LAYOUT.bench_report}"], cwd=cwd, capture_output=True, text=True)
    try:
        return str(json.loads(res.stdout)["headline"]["variant"]) if res.returncode == 0 else None
    except (ValueError, KeyError, TypeError):
        return None


def sweep_points(rows: list[dict[str, Any]], cwd: str | Path | None = None) -> tuple[list[SweepPoint], list[str]]:
    """The finished runs of `dvc exp show --json`, Pareto flags set, and one line per run left out.

    Args:
        rows: the parsed JSON.
        cwd: the Git repository to read each run's served variant from (None: not read).

    Raises:
        ReportError: no run has the optimize headline figures (run the optimize stage, or upgrade its metrics).
    """
    points: list[SweepPoint] = []
    skipped: list[str] = []
    for rec, state in _records(rows):
        name = rec.get("name") or str(rec.get("rev", "?"))[:7]
        if state != "success" and state != "commit":
            skipped.append(f"{name}: {state}")
            continue
        got = _point(rec, served_variant(rec["rev"], cwd) if cwd is not None else None)
        if isinstance(got, str):
            skipped.append(f"{name}: {got}")
        else:
            points.append(got)
    if not points:
        raise ReportError(METRICS_FILE, "no run in `dvc exp show` has the optimize headline: " + "; ".join(skipped))
    front = pareto_front(points)
    return [p.model_copy(update={"pareto": i in front}) for i, p in enumerate(points)], skipped


def pareto_front(points: list[SweepPoint]) -> set[int]:
    """Indices of the points no other point beats: as accurate or more, as fast or faster, as small or smaller, and
    strictly better on one of the three."""

    def dominates(a: SweepPoint, b: SweepPoint) -> bool:
        no_worse = a.serve_f1 >= b.serve_f1 and a.p50_ms <= b.p50_ms and a.size_mb <= b.size_mb
        return no_worse and (a.serve_f1 > b.serve_f1 or a.p50_ms < b.p50_ms or a.size_mb < b.size_mb)

    return {i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)}


def pick_for_budget(points: list[SweepPoint], budget_ms: float | None, tolerance_pts: float = 0.5) -> SweepPick:
    """The run to serve: among those whose p50 latency fits the budget, the fastest within `tolerance_pts` of the
    best macro-F1 there (the stage's own rule, fastest within an accuracy budget); ties go to the smaller model.

    Args:
        points: the runs.
        budget_ms: largest p50 latency at batch 1 (None: no limit).
        tolerance_pts: macro-F1 points a faster run may lose against the most accurate one that fits.
    """
    limit = math.inf if budget_ms is None else budget_ms
    fits = [p for p in points if p.p50_ms <= limit]
    if not fits:
        fastest = min(points, key=lambda p: p.p50_ms)
        reason = f"no run meets p50 <= {budget_ms:g} ms; the fastest is {fastest.name} at {fastest.p50_ms:.2f} ms"
        return SweepPick(point=None, budget_ms=budget_ms, tolerance_pts=tolerance_pts, reason=reason)
    best = max(p.serve_f1 for p in fits)
    close = [p for p in fits if 100 * (best - p.serve_f1) <= tolerance_pts + 1e-9]
    win = min(close, key=lambda p: (p.p50_ms, p.size_mb))
    budget = "no latency budget" if budget_ms is None else f"p50 <= {budget_ms:g} ms"
    reason = (
        f"{budget}: {len(fits)} of {len(points)} runs fit; {win.name} is the fastest within {tolerance_pts:g} points "
        f"of their best macro-F1 {best:.4f} ({win.serve_f1:.4f}, {win.p50_ms:.2f} ms, {win.size_mb:.1f} MB)"
    )
    return SweepPick(point=win, budget_ms=budget_ms, tolerance_pts=tolerance_pts, reason=reason)
