"""The stage pages' "Measured" tables and the pipeline page's stage wall times, rendered at docs build time from the
current reports (reports/*.json, reports/timings/), so no page quotes a figure by hand."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kit.core.headline import REPORT_FILES, read_stage_times
from kit.core.layout import LAYOUT

__all__ = ["MEASURED_MARKER", "STAGE_TIMES_MARKER", "measured_markdown", "replace_markers", "stage_times_markdown"]

MEASURED_MARKER = re.compile(r"<!-- measured:(\w+) -->")
STAGE_TIMES_MARKER = "<!-- stage-times -->"
Report = dict[str, Any]


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _num(value: Any, fmt: str = "{:,.1f}") -> str:
    """A figure as printed, or an en dash where the report has none."""
    text = "–" if value is None else fmt.format(value)
    return "0.00" if text == "-0.00" else text  # a drop of -0.00001 points is no gain


def _note(text: str) -> str:
    return f'!!! note "Not measured yet"\n    {text}\n'


def _finetune(r: Report) -> str:
    labels, train, data = r["labels"], r.get("train", {}), r.get("data", {})
    head = ["", "test accuracy", "test macro-F1", "gain (points)"] + [f"F1 {c}" for c in labels]
    parts = (
        ("fine-tuned", r["model"], r.get("macro_f1_gain"), train.get("train_time_s"), train.get("train_samples_per_s")),
        ("baseline", r["baseline"], None, r["baseline"].get("fit_time_s"), None),
    )
    rows = [
        [name, _num(part["accuracy"], "{:.3f}"), _num(part["macro_f1"], "{:.4f}"),
         _num(None if gain is None else 100 * gain, "{:+.1f}")]
        + [_num(part["per_class"][c]["f1"], "{:.3f}") for c in labels] + [_num(secs, "{:,.2f}"), _num(rate)]
        for name, part, gain, secs, rate in parts
    ]  # fmt: skip
    src = (
        f"Run of `{train.get('base_model', '?')}` on {data.get('train_rows', 0):,} training rows, "
        f"{train.get('steps', '?')} steps (best {train.get('best_step', '?')}), {train.get('processes', 1)} "
        f"process(es) × {train.get('threads_per_process', '?')} threads, stage time "
        f"{_num(train.get('stage_time_s'))} s; test split {data.get('test_rows', 0):,} rows."
    )
    return f"{src}\n\n{_table(head + ['train time s', 'train samples/s'], rows)}"


def _machine(m: dict[str, Any] | None) -> str:
    if not m:
        return "machine not recorded"
    return f"{m.get('cpu', '?')}, {m.get('isa', '?')}" + (f", {m['threads']} threads" if "threads" in m else "")


def _optimize(r: Report) -> str:
    bench, acc, hl = r["benchmark"], r["accuracy"], r["headline"]
    sizes = {v["name"]: v.get("size_mb") for v in r.get("variants", [])}
    by = {(x["variant"], x["batch_size"]): x for x in bench["results"] if x["seq_len"] == hl["seq_len"]}
    b1, bn = hl["latency_batch_size"], hl["throughput_batch_size"]
    ref_f1 = acc[bench["reference"]]["macro_f1"]
    rows = []
    for name in dict.fromkeys(v for v, _ in by):
        lo, hi, a = by.get((name, b1), {}), by.get((name, bn), {}), acc.get(name, {})
        f1 = a.get("macro_f1")
        label = f"**{name}** (served)" if name == hl["variant"] else name
        rows.append([
            label, _num(sizes.get(name, lo.get("size_mb"))), _num(lo.get("latency_ms", {}).get("p50")),
            _num(lo.get("speedup"), "{:.2f}"), _num(hi.get("throughput_seq_s")), _num(hi.get("speedup"), "{:.2f}"),
            _num(f1, "{:.4f}"), _num(None if f1 is None else 100 * (ref_f1 - f1), "{:.2f}"),
            _num(a.get("agreement"), "{:.3f}"),
        ])  # fmt: skip
    head = ["variant", "size MB", f"p50 b{b1} ms", f"× PyTorch b{b1}", f"seq/s b{bn}", f"× PyTorch b{bn}"]
    out = f"Machine: {_machine(bench.get('machine'))}; sequence length {hl['seq_len']}.\n\n"
    out += _table(head + ["macro-F1", "drop (points)", "agreement"], rows)
    out += (
        f"\nHeadline (median of the per-round ratios): **{hl['variant']}** at {hl['latency_ratio']:.2f}× PyTorch "
        f"(batch {b1}) and {hl['throughput_ratio']:.2f}× (batch {bn}), {hl['macro_f1_drop_points']:.2f} points "
        "of macro-F1 lost.\n"
    )
    if timings := r.get("timings"):  # StepTimings: written by runs newer than some committed reports
        total = timings["total_s"]
        rows = [[st["name"], _num(st["seconds"]), f"{100 * st['seconds'] / total:.0f} %"] for st in timings["steps"]]
        out += f"\nWhere the stage's {total:,.1f} s went:\n\n" + _table(["step", "seconds", "share"], rows)
    return out


def _deploy(r: Report) -> str:
    cfg = r.get("config", {})
    nob = {x["concurrency"]: x for x in r.get("nobatch_levels", [])}
    rows = []
    for lv in r["levels"]:
        n, c = nob.get(lv["concurrency"], {}), lv["concurrency"]
        bold = f"**{c}**" if c == r.get("ratio_concurrency") else c
        rows.append([bold, _num(lv["throughput_rps"]), _num(lv["p50_ms"]), _num(lv["p99_ms"]),
                     _num(lv.get("mean_batch_size")), _num(n.get("throughput_rps")), _num(n.get("p50_ms")),
                     _num(n.get("p99_ms"))])  # fmt: skip
    head = ["clients", "batching req/s", "p50 ms", "p99 ms", "mean batch", "max batch 1 req/s", "p50 ms", "p99 ms"]
    model = r.get("model", {})
    out = (
        f"Served `{model.get('variant', '?')}` on {cfg.get('cpu_count', '?')} CPUs shared by server and client, "
        f"{_num(cfg.get('duration_s'), '{:g}')} s per level"
        + (f"; the stage took {r['wall_s']:.0f} s" if r.get("wall_s") is not None else "")
        + ".\n\n"
        + _table(head, rows)
    )
    bare = r["bare"]
    grid = bare.get("grid") or [bare, bare["unbatched"]]
    out += "\nBare model (in-process, the ceiling):\n\n" + _table(
        ["batch size", "bucketing", "texts/s"],
        [[g["batch_size"], "yes" if g.get("bucketing") else "no", _num(g.get("throughput_rps"))] for g in grid],
    )
    out += (
        f"\nServer / bare: **{_num(r.get('server_over_bare'), '{:.3f}')}** at {r.get('ratio_concurrency')} clients "
        f"(p99 {_num(r.get('p99_ms_at_ratio'))} ms, target {_num(r.get('p99_target_ms'), '{:g}')} ms).\n"
    )
    if goals := r.get("goals"):
        rows = [
            [g["name"], g["target"], _num(g.get("value"), "{:,.3g}"), "yes" if g["met"] else "**no**"] for g in goals
        ]
        out += "\n" + _table(["goal", "target", "value", "met"], rows)
    else:  # a report written before goals: its pass/fail targets
        rows = [[k, "yes" if v else "**no**"] for k, v in r.get("targets", {}).items()]
        out += "\n" + _table(["target", "met"], rows)
    if rep := r.get("replicas"):
        out += (
            f"\nReplicas: {rep['replicas']} servers of {rep['threads_per_replica']} thread(s), each pinned to its cores "
            f"{rep['cores']}, beside the single server (interleaved); best within the p99 target "
            f"{_num(rep.get('best_rps_within_p99'))} req/s, **{_num(rep.get('replicas_over_bare'), '{:.3f}')}** of the "
            "bare model.\n\n"
        )
        out += _table(
            ["clients", "replicas req/s", "p99 ms", "single req/s", "p99 ms", "replicas / single"],
            [[x["concurrency"], _num(x["replicas_rps"]), _num(x["p99_replicas_ms"]), _num(x["single_rps"]),
              _num(x["p99_single_ms"]), _num(x["ratio"], "{:.3f}")] for x in rep["over_single"]],
        )  # fmt: skip
    return out


def _monitor(r: Report) -> str:
    rows = [
        [s["name"], "–" if s["detected"] is None else ("yes" if s["detected"] else "**missed**"),
         _num(s.get("detection_delay"), "{:d}"), _num(s.get("detection_rate"), "{:.2f}"), s.get("false_alarms")]
        for s in r["scenarios"]
    ]  # fmt: skip
    lo = r.get("logging_overhead") or {}
    out = f"Machine: {_machine(r.get('machine'))}; model `{r.get('model_variant', '?')}`.\n\n"
    out += _table(["scenario", "detected", "delay (windows)", "detection rate", "false alarms"], rows)
    out += f"\nFalse-alarm rate on the control: **{100 * r['control_false_alarm_rate']:.1f} %** "
    out += f"({r.get('control_windows', '?')} windows).\n\n"
    if lo:
        out += (
            f"Logging on / off: **{lo['ratio']:.3f}×** the throughput ({_num(lo.get('on_rps'))} vs "
            f"{_num(lo.get('off_rps'))} req/s at {lo.get('concurrency')} clients).\n"
        )
    return out


def _cost(r: Report) -> str:
    rec, traffic = r["recommendation"], r["settings"]["traffic"]
    cap = r.get("capacity", {})
    rows = [
        [f"**{o['name']}**" if o["name"] == rec["option"] else o["name"], _num(o["monthly_usd"], "${:,.2f}"),
         _num(o.get("usd_per_million"), "${:,.3f}"), _num(o.get("p99_ms")), "yes" if o.get("p99_holds") else "no"]
        for o in r["options"]
    ]  # fmt: skip
    out = (
        f"At {traffic['requests_per_day']:,.0f} requests/day (p99 objective {traffic['p99_objective_ms']:g} ms), "
        f"capacity measured on {cap.get('measured_cpu', '?')} ({cap.get('measured_arch', '?')}).\n\n"
        f"Recommendation: **{rec['option']}**, {_num(rec['monthly_usd'], '${:,.2f}')}/month "
        f"({_num(rec['usd_per_million'], '${:,.3f}')} per 1M): {rec.get('reason', '')}\n\n"
    )
    out += _table(["option", "$/month", "$ per 1M", "p99 ms", "p99 holds"], rows)
    if sizes := r.get("pod_sizes"):
        out += "\nPod sizes measured (the options are priced with the first):\n\n" + _table(
            ["vCPU", "texts/s", "per vCPU", "$ per 1M at full load", "always-on $/month", "deploy with"],
            [[p["vcpus"], _num(p["texts_per_s"]), _num(p["texts_per_s_per_vcpu"]),
              _num(p["usd_per_million_at_full_load"], "${:,.4f}"), _num(p["always_on_monthly_usd"], "${:,.2f}"),
              f"`{p['deploy_with']}`"] for p in sizes],
        )  # fmt: skip
    return out


RENDERERS: dict[str, Callable[[Report], str]] = {
    "finetune": _finetune,
    "optimize": _optimize,
    "deploy": _deploy,
    "monitor": _monitor,
    "cost": _cost,
}


def measured_markdown(stage: str, root: Path) -> str:
    """One stage's measured tables from its report, headed by the report it comes from; a note when it is missing.

    Raises:
        ValueError: no renderer for `stage` (a typo in a page's marker).
    """
    if stage not in RENDERERS:
        raise ValueError(f"<!-- measured:{stage} -->: no such stage (one of {', '.join(RENDERERS)})")
    path = root / REPORT_FILES[stage]
    if not path.is_file():
        return _note(f"`{REPORT_FILES[stage]}` is missing: run the pipeline first (`make run`), then rebuild the docs.")
    report = json.loads(path.read_text())
    version = report.get("model_version") or report.get("model", {}).get("version")
    version = version or report.get("selection", {}).get("version")
    run = f"the last run, model version `{version}`" if isinstance(version, str) else "the last run"
    return f"From `{REPORT_FILES[stage]}` ({run}).\n\n" + RENDERERS[stage](report)


def stage_times_markdown(root: Path) -> str:
    """The last run's wall time per stage (reports/timings/), with the total; a note before any run recorded one."""
    times = read_stage_times(root)
    if not times:
        return _note(f"No stage times in `{LAYOUT.timings_dir}/`: run the pipeline first (`make run`).")
    total = sum(times.values())
    rows = [[s, _num(t), f"{100 * t / total:.0f} %"] for s, t in times.items()]
    return _table(["stage", "wall time s", "share"], rows + [["**total**", f"**{total:,.1f}**", "100 %"]])


def replace_markers(markdown: str, root: Path) -> str:
    """The page with every measured and stage-times marker replaced by its generated markdown."""
    if STAGE_TIMES_MARKER in markdown:
        markdown = markdown.replace(STAGE_TIMES_MARKER, stage_times_markdown(root))
    return MEASURED_MARKER.sub(lambda m: measured_markdown(m.group(1), root), markdown)
