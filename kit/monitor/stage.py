"""The monitor stage as one function: the reference profile through the serving model, the scenarios replayed over
HTTP through a real `kit serve` with its prediction log on, every window judged, the log's cost, and the ops files."""

from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kit.core.io import rel_path, write_text
from kit.core.layout import LAYOUT
from kit.core.params import MonitorParams, Params
from kit.core.reports import ServeReport, read_report, write_report
from kit.monitor.alerts import AlertSettings, write_rules
from kit.monitor.calibrate import CalibrationSettings
from kit.monitor.dashboard import DashboardSettings, write_dashboard
from kit.monitor.embedding import mmd_cost_per_1000
from kit.monitor.evaluate import control_false_alarm_rate, judge_scenario, split_windows
from kit.monitor.predlog_read import join_delayed_labels, read_prediction_log
from kit.monitor.profile import Reference, build_reference
from kit.monitor.replay import measure_overhead, replay_scenarios, running_server, serve_config
from kit.monitor.report import EmbeddingCost, LogSummary, MonitorReport, ReferenceSummary, ScenarioResult
from kit.monitor.rule_tests import write_rule_tests
from kit.monitor.scenarios import Scenario, ScenarioSettings, build_scenarios, load_pool
from kit.serve.model import ModelMeta, OnnxTextClassifier, read_model_dir
from kit.serve.predlog import LOG_SUFFIX, OPEN_SUFFIX, LogSettings

__all__ = ["run_monitor"]

_BATCH = 64  # texts per model run while profiling the reference split


def _say(message: str) -> None:
    print(f"monitor: {message}", flush=True)


def _machine() -> dict[str, str]:
    """CPU model and the widest vector ISA, so overhead figures are compared only within one machine kind."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = set(m.group(1).split()) if (m := re.search(r"^flags\s*:\s*(.+)$", text, re.M)) else set()
    isa = next((i for i in ("avx512_vnni", "avx512f", "avx2") if i in flags), platform.machine())
    model = m.group(1).strip() if (m := re.search(r"^model name\s*:\s*(.+)$", text, re.M)) else platform.processor()
    return {"cpu": model, "isa": isa.replace("avx512_vnni", "avx512-vnni").replace("avx512f", "avx512")}


def _reference(
    p: MonitorParams, meta: ModelMeta, threads: int, root: Path
) -> tuple[Reference, ReferenceSummary, np.ndarray | None]:
    """Run the reference split through the serving model and build, calibrate and save the reference profile."""
    t0 = time.perf_counter()
    split = root / LAYOUT.split(p.reference_split)
    texts = pd.read_parquet(split, columns=["text"])["text"].astype(str).tolist()
    # Through the server's own path: the same graph, tokenizer, truncation and token counting as the logged records.
    model = OnnxTextClassifier(meta, threads, pooled=p.embeddings, counts=True)
    runs = [model.predict(texts[i : i + _BATCH]) for i in range(0, len(texts), _BATCH)]
    prob = np.concatenate([r[0] for r in runs])
    embeddings = np.concatenate([r[1] for r in runs if r[1] is not None]) if p.embeddings else None
    counts = np.concatenate([r[2] for r in runs if r[2] is not None])
    frame = pd.DataFrame({
        "length_chars": [len(t) for t in texts], "length_tokens": counts[:, 0].astype(int),
        "unk_rate": counts[:, 1], "subword_rate": counts[:, 2],
        "confidence": prob.max(axis=1), "label": [meta.labels[i] for i in prob.argmax(axis=1)],
    })  # fmt: skip
    settings = CalibrationSettings(
        target=p.false_alarm_target, method=p.multiple_testing, window_size=p.window_size, seed=p.seed
    )
    _say(f"calibrating thresholds on {len(texts)} {p.reference_split} texts (window {p.window_size}, "
         f"target {p.false_alarm_target:g} per window, {p.multiple_testing})")  # fmt: skip
    ref = build_reference(
        frame, embeddings, model_version=meta.version, settings=settings, embedding_rows=p.embedding_rows
    )
    ref.save(root / LAYOUT.monitor_reference_dir)
    cal = ref.profile.calibration
    summary = ReferenceSummary(
        path=LAYOUT.monitor_reference_dir, split=p.reference_split, rows=len(frame), anchor_rows=len(ref.sample),
        embedding_dim=None if embeddings is None else int(embeddings.shape[1]), method=cal.method,
        target=cal.target, window_size=cal.window_size, null_windows=cal.n_null,
        null_false_alarm_rate=cal.null_false_alarm_rate, thresholds=cal.thresholds,
        seconds=round(time.perf_counter() - t0, 2),
    )  # fmt: skip
    return ref, summary, embeddings


def _scenarios(p: MonitorParams, root: Path) -> list[Scenario]:
    settings = ScenarioSettings(
        window_size=p.window_size, windows=p.shift_windows, control_windows=p.control_windows,
        shift_starts_at=p.shift_starts_at, prior_factor=p.prior_factor, typo_rate=p.typo_rate,
        foreign_locale=p.foreign_locale, ramp_windows=p.ramp_windows, gradual_kind=p.gradual_kind,
        label_fraction=p.label_fraction, seed=p.seed,
    )  # fmt: skip
    return list(build_scenarios(load_pool(root / LAYOUT.split("test")), settings).values())


def _write_labels(scenarios: list[Scenario], p: MonitorParams, path: Path) -> int:
    """The delayed labels of every scenario as JSONL (request_id, label): what a labelling team sends back later."""
    frames = [s.delayed_labels(p.label_fraction, seed=p.seed) for s in scenarios]
    labels = pd.concat(frames, ignore_index=True)
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labels.to_dict("records")))
    return len(labels)


def _clear_log(log_dir: Path) -> None:
    """Remove the previous run's log files (only the server's own file names; anything else is left alone)."""
    if log_dir.is_dir():
        prefix = LogSettings.model_fields["prefix"].default
        for f in [*log_dir.glob(f"{prefix}-*{LOG_SUFFIX}"), *log_dir.glob(f".{prefix}-*{OPEN_SUFFIX}")]:
            f.unlink()


def _ops_files(p: MonitorParams, params: Params, root: Path) -> list[str]:
    """Alert rules (plain and PrometheusRule), their promtool tests and the Grafana dashboard with provisioning."""
    out = root / LAYOUT.monitoring_dir
    alerts = AlertSettings(
        p99_target_ms=p.latency_p99_ms, class_share_shift=p.class_share_shift, quality_floor=p.quality_floor,
        runbook_base_url=p.runbook_base_url,
    )  # fmt: skip
    paths = [*write_rules(out, alerts, namespace=params.deploy.namespace).values(), write_rule_tests(out, alerts)]
    board = DashboardSettings(p99_target_ms=p.latency_p99_ms, quality_floor=p.quality_floor)
    paths += list(write_dashboard(out / "grafana", board).values())
    return sorted(rel_path(f, root) for f in paths)


def run_monitor(params: Params, root: str | Path) -> MonitorReport:
    """Everything notebook 05 does: reference, replay through `kit serve`, judged windows, overhead, ops files.

    Args:
        params: validated params (the monitor and serve sections are read; deploy.namespace for the PrometheusRule).
        root: project root; the serving dir, the splits and reports/serve.json are read relative to it.

    Returns:
        The report as written to reports/monitor.json.

    Raises:
        ModelDirError: the serving dir is unusable.
        ReportError: reports/serve.json is missing or stale (its ratio concurrency sets the overhead load).
        MonitorError: the log or a window cannot be judged (names the file, window or versions).
    """
    root = Path(root).resolve()
    p = params.monitor
    model_dir = root / LAYOUT.serving_dir
    meta = read_model_dir(model_dir, params.serve.max_length)
    serve_report = read_report(root / LAYOUT.serve_report, ServeReport)
    reference, ref_summary, ref_embeddings = _reference(p, meta, params.serve.threads, root)
    _say(f"reference: {ref_summary.null_windows} null windows, their false-alarm rate "
         f"{ref_summary.null_false_alarm_rate:.3f} ({ref_summary.seconds:.0f} s)")  # fmt: skip
    scenarios = _scenarios(p, root)
    labels_path = root / LAYOUT.monitor_labels
    n_labels = _write_labels(scenarios, p, labels_path)
    log_dir = root / LAYOUT.monitor_log_dir
    _clear_log(log_dir)
    # The replay only fills the log; its client shares the machine's cores, and spinning ORT threads took enough of
    # them to slow it by half on 2 cores (36 s against 55 s). The overhead runs below keep the pipeline's setting.
    cfg = {**serve_config(params.serve, log_dir, embeddings=p.embeddings), "ort_spinning": False}
    n_windows = sum(len(s.windows) for s in scenarios)
    _say(f"replaying {len(scenarios)} scenarios, {n_windows} windows of {p.window_size} texts through kit serve")
    t0 = time.perf_counter()
    with running_server(model_dir, cfg, "replay", root) as h:
        sent = replay_scenarios(h.url, scenarios, concurrency=p.replay_concurrency)
    _say(f"replayed {sent} requests in {time.perf_counter() - t0:.0f} s; judging the logged windows")
    read = read_prediction_log(log_dir)
    joined, join = join_delayed_labels(read.frame, labels_path)
    windows = split_windows(joined)
    html_dir = root / LAYOUT.monitor_html_dir
    results: list[ScenarioResult] = []
    for s in scenarios:
        mine = {k: f for (name, k), f in windows.items() if name == s.name}
        results.append(judge_scenario(reference, s, mine, min_rows=p.min_rows, html_dir=html_dir, root=root))
        r = results[-1]
        _say(f"{s.name}: " + ("control, " if r.detected is None else f"detected={r.detected} delay={r.detection_delay}, ")
             + f"false alarms {r.false_alarms}/{r.unshifted_windows}")  # fmt: skip
    control_texts = [t for w in scenarios[0].windows for t in w.texts]  # SCENARIOS starts with the control
    _say(f"logging overhead at {serve_report.ratio_concurrency} clients ({p.overhead_repeats} runs per setting)")
    overhead = measure_overhead(
        model_dir, params.serve, control_texts, concurrency=serve_report.ratio_concurrency,
        duration_s=p.overhead_duration_s, repeats=p.overhead_repeats, cwd=root, embeddings=p.embeddings,
    )  # fmt: skip
    emb_cost = None
    if reference.mmd is not None and ref_embeddings is not None:
        secs = mmd_cost_per_1000(reference.mmd, ref_embeddings, window_size=p.window_size)
        emb_cost = EmbeddingCost(
            dim=int(ref_embeddings.shape[1]), mmd_ms_per_1000=round(secs * 1000, 3),
            reference_rows=int(reference.mmd.x.shape[0]),
        )  # fmt: skip
    control = results[0]
    report = MonitorReport(
        model_version=meta.version, model_variant=meta.variant, reference=ref_summary,
        log=LogSummary(path=LAYOUT.monitor_log_dir, files=len(read.files), records=len(read.frame),
                       corrupt_lines=read.corrupt, labels_path=LAYOUT.monitor_labels, labels=n_labels,
                       labels_matched=join.matched),
        scenarios=results, control_false_alarm_rate=control_false_alarm_rate(control),
        control_windows=len(control.windows),
        detection={r.name: r.detection_delay for r in results if r.detected is not None},
        logging_overhead=overhead, embedding_cost=emb_cost, ops_files=_ops_files(p, params, root), machine=_machine(),
    )  # fmt: skip
    if overhead.ratio < 0.95:
        report.warnings.append(f"prediction log costs more than 5% throughput: on/off = {overhead.ratio:.3f}")
    from kit.monitor.plots import write_plots

    report.plots = write_plots(report, root)
    path = write_report(root / LAYOUT.monitor_report, report)
    _say(f"control false alarms {report.control_false_alarm_rate:.3f} over {report.control_windows} windows; "
         f"log overhead on/off {overhead.ratio:.3f}; wrote {rel_path(path, root)}")  # fmt: skip
    return report
