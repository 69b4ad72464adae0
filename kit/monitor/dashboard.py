"""The Grafana dashboard of the served model, built in code with grafana-foundation-sdk, and the provisioning files
(datasource with a fixed uid, dashboard provider) that load it as is: no `__inputs`, nothing to pick on import."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kit.core.io import write_text
from kit.monitor import metric_names as m

__all__ = ["DashboardSettings", "PanelSpec", "panel_specs", "build_dashboard", "provisioning", "write_dashboard"]

RATE = "$__rate_interval"  # Grafana's own rate window: at least four scrape intervals, whatever the zoom


class DashboardSettings(BaseModel):
    """Where the dashboard reads from and what it draws."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = "kit · served model"
    uid: str = "kit-serve"
    datasource_uid: str = "kit-prometheus"
    datasource_name: str = "Prometheus (kit)"
    prometheus_url: str = Field("http://prometheus:9090", description="The datasource URL as Grafana reaches it.")
    dashboards_path: str = Field("/var/lib/grafana/dashboards/kit", description="Where Grafana finds the JSON.")
    features: tuple[str, ...] = m.DEFAULT_DRIFT_FEATURES
    p99_target_ms: float = Field(100.0, gt=0)
    quality_floor: float = Field(0.5, gt=0, lt=1)
    serve_job: str = m.SERVE_JOB
    monitor_job: str = m.MONITOR_JOB


@dataclass(frozen=True)
class PanelSpec:
    """One time-series panel: its queries as (PromQL, legend) and an optional threshold line."""

    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]
    row: str
    threshold: float | None = None
    description: str = ""


def _serve_panels(s: DashboardSettings) -> list[PanelSpec]:
    sj = f'job="{s.serve_job}"'
    req, pred = f"{m.REQUESTS.name}{{{sj}}}", f"{m.PREDICTIONS.name}{{{sj}}}"
    lat = f'{m.REQUEST_DURATION.sample("bucket")}{{{sj},route="{m.PREDICT_ROUTE}"}}'
    batch = m.BATCH_SIZE
    row = "Service"
    return [
        PanelSpec(
            "Request rate", "reqps", ((f"sum by (route, status) (rate({req}[{RATE}]))", "{{route}} {{status}}"),), row
        ),
        PanelSpec(
            "Latency p50 / p99 (/predict)",
            "s",
            tuple(
                (f"histogram_quantile({q}, sum by (le) (rate({lat}[{RATE}])))", f"p{int(q * 100)}") for q in (0.5, 0.99)
            ),
            row,
            threshold=s.p99_target_ms / 1000,
        ),
        # `or vector(0)`: no 5xx series yet means a ratio of 0, not an empty panel.
        PanelSpec(
            "Error ratio (5xx)",
            "percentunit",
            (
                (
                    f'(sum(rate({m.REQUESTS.name}{{{sj},status=~"5.."}}[{RATE}])) or vector(0)) / sum(rate({req}[{RATE}]))',
                    "5xx",
                ),
            ),
            row,
        ),
        PanelSpec(
            "Batch size",
            "none",
            (
                (f"histogram_quantile(0.5, sum by (le) (rate({batch.sample('bucket')}{{{sj}}}[{RATE}])))", "p50"),
                (
                    f"sum(rate({batch.sample('sum')}{{{sj}}}[{RATE}])) / sum(rate({batch.sample('count')}{{{sj}}}[{RATE}]))",
                    "mean",
                ),
            ),
            row,
        ),
        PanelSpec(
            "Queue depth",
            "none",
            (
                (f"sum({m.QUEUE_DEPTH.name}{{{sj}}})", "texts waiting"),
                (f"sum({m.REQUESTS_IN_PROGRESS.name}{{{sj}}})", "requests in progress"),
            ),
            row,
        ),
        PanelSpec(
            "Class shares",
            "percentunit",
            (
                (
                    f"sum by (label) (rate({pred}[{RATE}])) / ignoring (label) group_left sum(rate({pred}[{RATE}]))",
                    "served {{label}}",
                ),
                (f'{m.CLASS_SHARE.name}{{job="{s.monitor_job}"}}', "window {{label}}"),
                (f'{m.REFERENCE_CLASS_SHARE.name}{{job="{s.monitor_job}"}}', "reference {{label}}"),
            ),
            row,
        ),
    ]


def _monitor_panels(s: DashboardSettings) -> list[PanelSpec]:
    mj = f'job="{s.monitor_job}"'
    row = "Drift and quality"
    panels = [
        PanelSpec(
            f"Drift: {feature}",
            "none",
            (
                (f'{m.DRIFT_STATISTIC.name}{{{mj},feature="{feature}"}}', "statistic"),
                (f'{m.DRIFT_THRESHOLD.name}{{{mj},feature="{feature}"}}', "threshold"),
            ),
            row,
            description="p-value methods drift below the threshold, distances (MMD, Wasserstein) above it.",
        )
        for feature in s.features
    ]
    panels += [
        PanelSpec(
            "Drift decisions",
            "none",
            (
                (f"{m.DRIFT_DETECTED.name}{{{mj}}}", "window drifted"),
                (f"sum({m.DRIFT_FEATURE_DETECTED.name}{{{mj}}})", "features drifted"),
            ),
            row,
        ),
        PanelSpec(
            "Realized macro-F1",
            "percentunit",
            ((f"{m.MACRO_F1.name}{{{mj}}}", "macro-F1"),),
            row,
            threshold=s.quality_floor,
        ),
        PanelSpec(
            "Verdict age",
            "s",
            ((f"time() - {m.PUSH_TIME}{{{mj}}}", "{{instance}}"),),
            row,
            description="Seconds since the monitor last pushed a verdict (KitMonitorStale alerts when it is too old).",
        ),
    ]
    return panels


def panel_specs(settings: DashboardSettings | None = None) -> list[PanelSpec]:
    """Every panel of the dashboard in order: the service row, then one drift panel per feature and quality."""
    s = settings or DashboardSettings()
    return _serve_panels(s) + _monitor_panels(s)


def build_dashboard(settings: DashboardSettings | None = None) -> dict:
    """The dashboard model (what Grafana stores) as plain JSON-able data; every panel and query names the
    provisioned datasource by uid."""
    from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
    from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

    s = settings or DashboardSettings()
    ds = DataSourceRef(type_val="prometheus", uid=s.datasource_uid)
    board = dashboard.Dashboard(s.title).uid(s.uid).tags(["kit"]).refresh("30s").time("now-6h", "now").readonly()
    row = None
    for spec in panel_specs(s):
        if spec.row != row:
            board = board.with_row(dashboard.Row(spec.row))
            row = spec.row
        panel = timeseries.Panel().title(spec.title).datasource(ds).unit(spec.unit).span(12).height(8)
        if spec.description:
            panel = panel.description(spec.description)
        for i, (expr, legend) in enumerate(spec.queries):
            query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("ABCDEFGH"[i]).datasource(ds)
            panel = panel.with_target(query)
        if spec.threshold is not None:
            steps = [Threshold(None, "green"), Threshold(spec.threshold, "red")]
            panel = panel.thresholds(dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
            panel = panel.thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def provisioning(settings: DashboardSettings | None = None) -> dict[str, dict]:
    """Grafana's provisioning documents: the Prometheus datasource with a fixed uid (so the dashboard needs no
    `__inputs`) and a file provider reading the dashboard JSON from `dashboards_path`."""
    s = settings or DashboardSettings()
    datasource = {
        "apiVersion": 1,
        "datasources": [
            {"name": s.datasource_name, "type": "prometheus", "uid": s.datasource_uid, "access": "proxy",
             "url": s.prometheus_url, "isDefault": True, "editable": False}
        ],
    }  # fmt: skip
    provider = {
        "apiVersion": 1,
        "providers": [
            {"name": "kit", "folder": "kit", "type": "file", "disableDeletion": False, "allowUiUpdates": False,
             "updateIntervalSeconds": 60, "options": {"path": s.dashboards_path, "foldersFromFilesStructure": False}}
        ],
    }  # fmt: skip
    return {"datasources/kit.yaml": datasource, "dashboards/kit.yaml": provider}


def write_dashboard(out_dir: str | Path, settings: DashboardSettings | None = None) -> dict[str, Path]:
    """Write `dashboards/<uid>.json` and `provisioning/{datasources,dashboards}/kit.yaml` atomically under `out_dir`.

    Returns:
        {"dashboard": path, "datasources/kit.yaml": path, "dashboards/kit.yaml": path}.
    """
    s = settings or DashboardSettings()
    out = Path(out_dir)
    board = json.dumps(build_dashboard(s), indent=2, sort_keys=True) + "\n"
    paths = {"dashboard": write_text(out / "dashboards" / f"{s.uid}.json", board)}
    for rel, doc in provisioning(s).items():
        paths[rel] = write_text(out / "provisioning" / rel, yaml.safe_dump(doc, sort_keys=False))
    return paths
