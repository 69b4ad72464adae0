"""The deploy stage as one function: load-test the served model, write reports/serve.json and its plots, render the
manifests sized from it and validate them offline. Notebook 04 calls run_deploy and only shows what it returns."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from kit.core.errors import DeployError
from kit.core.io import rel_path
from kit.core.layout import LAYOUT
from kit.core.params import Params
from kit.core.reports import ManifestCheck, ServeReport, write_report
from kit.deploy.loadtest import run_loadtest, texts_from_parquet
from kit.deploy.manifests import render
from kit.deploy.plots import save_plots
from kit.deploy.validate import validate_dir

__all__ = ["run_deploy"]


def _say(message: str) -> None:
    print(f"deploy: {message}", flush=True)


def _measure(params: Params, root: Path, progress: bool) -> ServeReport:
    """The load test on deploy.model_dir with texts from deploy.texts_path, as a report with project-relative paths."""
    d = params.deploy
    model_dir, texts_path = root / d.model_dir, root / d.texts_path
    texts = texts_from_parquet(texts_path, max_texts=d.max_texts)
    _say(f"load test of {rel_path(model_dir, root)} with {len(texts)} texts from {rel_path(texts_path, root)}, "
         f"levels {list(d.concurrency_levels)}")  # fmt: skip
    # Server logs and params files are scratch: only the figures are kept.
    with tempfile.TemporaryDirectory(prefix="kit-serve-logs-") as logs:
        raw = run_loadtest(model_dir, texts, params.serve.model_dump(), d, logs, progress=progress)
    raw["model"]["dir"] = rel_path(model_dir, root)
    raw["config"]["texts_path"] = rel_path(texts_path, root)
    return ServeReport.model_validate(raw)


def run_deploy(params: Params, root: str | Path, *, progress: bool = True) -> ServeReport:
    """Everything notebook 04 does: load test, reports/serve.json, plots, manifests sized from the report, validation.

    Args:
        params: validated params (the serve and deploy sections are read).
        root: project root; every input and output path is relative to it (kit.core.layout.LAYOUT, deploy.*).
        progress: show a progress bar over the load-test runs.

    Returns:
        The report as written to reports/serve.json (plots and manifest validation included).

    Raises:
        DataError: the texts split is missing or has no texts.
        ModelDirError, DeployError: the server would not start or failed its smoke test.
        DeployError: the rendered manifests failed validation (names the failing files; the report is written first).
    """
    t0 = time.perf_counter()
    root = Path(root).resolve()
    d = params.deploy
    report = _measure(params, root, progress)
    _say(
        f"{report.throughput_per_pod_rps} req/s per pod at {report.ratio_concurrency} clients "
        f"({report.ratio_concurrency_rule}), server/bare {report.server_over_bare}, p99 {report.p99_ms_at_ratio} ms"
    )
    for g in report.goals:
        _say(f"goal {g.name} {g.target}: {g.value} at {g.where}: {'met' if g.met else 'NOT met'}")  # fmt: skip
    report.plots = [rel_path(p, root) for p in save_plots(report.model_dump(), root / LAYOUT.plots_dir)]
    out = root / d.out_dir
    files = render(params, report=report, out_dir=out, root=root)
    _say(f"rendered {len(files)} manifests under {rel_path(out, root)}; validating (Kubernetes {d.k8s_version})")
    check = validate_dir(out, d.k8s_version, root=root).relative_to(root)
    report.manifests = ManifestCheck(
        dir=rel_path(out, root), files=[rel_path(f, root) for f in files], ok=check.ok, lines=check.lines(),
        schema_rows=check.schema,
    )  # fmt: skip
    report.wall_s = round(time.perf_counter() - t0, 1)
    path = write_report(root / LAYOUT.serve_report, report)
    _say(f"wrote {rel_path(path, root)} and {', '.join(report.plots)}")
    if not check.ok:
        raise DeployError(f"rendered manifests failed validation: {', '.join(check.failing_files())} "
                          f"(every problem is listed under manifests.lines in {LAYOUT.serve_report})")  # fmt: skip
    return report
