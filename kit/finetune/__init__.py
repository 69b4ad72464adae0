"""The finetune stage: fine-tune a transformer classifier on the data stage's splits, beside a TF-IDF baseline.
run_finetune is the stage (notebooks/02_finetune.ipynb, `kit finetune`, `python -m kit.finetune` call it); the names
below load their module on first use, so importing this package (or kit.finetune.commands) loads no torch."""

from __future__ import annotations

from kit.core.lazy import lazy_api

__all__ = [
    "run_finetune",
    "check_quality_gate",
    "load_model",
    "save_model_dir",
    "embedded_model_dir",
    "load_splits",
    "sample_rows",
    "encode",
    "fit_baseline",
    "render_model_card",
    "plot_training_curves",
    "plot_confusion",
    "summary_table",
    "per_class_table",
]

# Public name -> the module defining it; imported on first access.
_HOME = {
    "run_finetune": "kit.finetune.train",
    "check_quality_gate": "kit.finetune.train",
    "load_model": "kit.finetune.model",
    "save_model_dir": "kit.finetune.model",
    "embedded_model_dir": "kit.finetune.model",
    "load_splits": "kit.finetune.splits",
    "sample_rows": "kit.finetune.splits",
    "encode": "kit.finetune.splits",
    "fit_baseline": "kit.finetune.baseline",
    "render_model_card": "kit.finetune.modelcard",
    "plot_training_curves": "kit.finetune.figures",
    "plot_confusion": "kit.finetune.figures",
    "summary_table": "kit.finetune.figures",
    "per_class_table": "kit.finetune.figures",
}

__getattr__, __dir__ = lazy_api(__name__, _HOME)
