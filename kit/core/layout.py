"""Where each stage reads and writes, relative to the project root: the one map that stage functions and tests use.
dvc.yaml declares the same paths (a test checks that every path here is an out or dep of the stage named)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Layout", "LAYOUT", "STAGE_NAMES"]

# Pipeline order; the notebook, package, docs page and params section of each stage carry this name.
STAGE_NAMES: tuple[str, ...] = ("data", "finetune", "optimize", "deploy", "monitor", "cost")


@dataclass(frozen=True)
class Layout:
    """Project-relative paths of the pipeline's outputs (POSIX strings, as dvc.yaml writes them)."""

    data_dir: str = "data"
    finetune_dir: str = "models/finetune"
    onnx_dir: str = "models/onnx"
    serving_dir: str = "models/serving"
    teacher_logits_dir: str = "models/optimize/teacher_logits"  # distillation soft labels, kept between runs
    reports_dir: str = "reports"
    plots_dir: str = "reports/plots"
    notebooks_out: str = "reports/notebooks"
    metrics_dir: str = "reports/metrics"  # the headline figures per stage: what DVC declares as metrics
    timings_dir: str = "reports/timings"  # each stage's wall time under `kit run`
    data_report: str = "reports/data.json"
    train_report: str = "reports/train.json"
    bench_report: str = "reports/bench.json"
    serve_report: str = "reports/serve.json"
    model_card: str = "reports/model_card.md"
    manifests_dir: str = "deploy/k8s"
    monitor_reference_dir: str = "models/monitor/reference"
    monitor_log_dir: str = "data/monitor/predictions"
    monitor_labels: str = "data/monitor/labels.jsonl"
    monitor_report: str = "reports/monitor.json"
    monitor_html_dir: str = "reports/monitor"
    monitoring_dir: str = "deploy/monitoring"
    monitor_statistics_plot: str = "reports/plots/monitor_statistics.png"
    monitor_class_shares_plot: str = "reports/plots/monitor_class_shares.png"
    monitor_delay_plot: str = "reports/plots/monitor_detection_delay.png"
    cost_report: str = "reports/cost.json"
    cost_breakeven_plot: str = "reports/plots/cost_breakeven.png"
    cost_sensitivity_plot: str = "reports/plots/cost_sensitivity.png"

    def split(self, name: str) -> str:
        """The Parquet file of split `name` (train, validation, test)."""
        return f"{self.data_dir}/{name}.parquet"

    @property
    def labels(self) -> str:
        return f"{self.data_dir}/labels.json"


LAYOUT = Layout()
