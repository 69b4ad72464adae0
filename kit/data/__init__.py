"""The data stage: ingest, validate, clean and split a labelled text corpus into Parquet train/validation/test.
run_data is the stage (notebooks/01_data.ipynb calls it); the names below load their module on first use."""

from __future__ import annotations

from kit.core.lazy import lazy_api

__all__ = [
    "run_data",
    "build_dataset",
    "SPLITS",
    "read_chunks",
    "embedded_corpus_path",
    "clean_chunk",
    "plot_class_balance",
    "plot_text_length",
    "save_plots",
]

# Public name -> the module defining it; imported on first access so `import kit.data` loads no pandas or pyarrow.
_HOME = {
    "run_data": "kit.data.stage",
    "build_dataset": "kit.data.dataset",
    "SPLITS": "kit.data.dataset",
    "read_chunks": "kit.data.read",
    "embedded_corpus_path": "kit.data.read",
    "clean_chunk": "kit.data.clean",
    "plot_class_balance": "kit.data.figures",
    "plot_text_length": "kit.data.figures",
    "save_plots": "kit.data.figures",
}

__getattr__, __dir__ = lazy_api(__name__, _HOME)
