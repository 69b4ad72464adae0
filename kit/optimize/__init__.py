"""The optimize stage: export the fine-tuned model to ONNX, derive faster variants, benchmark them against PyTorch and
write the serving model. `run_optimize` is the stage; `bench_models` benchmarks any models (`kit bench`).

The public names below load their module on first use, so importing the package (or kit.optimize.commands) stays
cheap: no torch, onnx or pandas until a function is called."""

from __future__ import annotations

from kit.core.lazy import lazy_api

# name -> module that defines it
_API = {
    "run_optimize": "kit.optimize.stage",
    "bench_models": "kit.optimize.bench",
    "benchmark": "kit.optimize.bench",
    "evaluate": "kit.optimize.bench",
    "machine_peak": "kit.optimize.machine",
    "load_runner": "kit.optimize.runners",
    "read_texts": "kit.optimize.runners",
    "build_all": "kit.optimize.variants",
    "build_variants": "kit.optimize.variants",
    "select_variant": "kit.optimize.variants",
    "write_serving": "kit.optimize.variants",
    "export_onnx": "kit.optimize.export",
    "check_parity": "kit.optimize.export",
    "is_kit_onnx": "kit.optimize.metadata",
    "distill": "kit.optimize.distill",
    "headline": "kit.optimize.figures",
    "summary_table": "kit.optimize.figures",
    "sweep_points": "kit.optimize.sweep",
    "pick_for_budget": "kit.optimize.sweep",
    "sweep_report": "kit.optimize.sweep_figures",
}

__all__ = list(_API)

__getattr__, __dir__ = lazy_api(__name__, _API)
