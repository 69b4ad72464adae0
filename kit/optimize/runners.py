"""Load any model (HF directory or ONNX file) behind one call signature and measure the memory it adds.
Also the RSS / peak-RSS probes the benchmark uses, and reading benchmark texts from Parquet or CSV."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.core.errors import DataError, KitError
from kit.optimize.export import load_classifier, model_spec, torch_logits
from kit.optimize.metadata import ModelSpec
from kit.serve.model import make_session, session_logits

__all__ = [
    "rss_mb",
    "reset_peak",
    "trim",
    "gc_frozen",
    "peak_mb",
    "Runner",
    "load_runner",
    "read_texts",
]


# ------------------------------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim() -> None:
    """Return freed heap pages to the OS (glibc malloc_trim), so RSS growth measures what a run really needs."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_frozen_depth = 0


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Collect once, then leave every object alive now out of the collector's scans until the (outermost) block ends.

    trim() collects before each measurement; with torch, transformers and the models loaded, a full scan of the
    long-lived objects took 0.3-1 s on 2 cores, every time, and an automatic one could land inside a timed call.
    Objects made inside the block are still collected, so what a run frees is still returned before RSS is read.
    """
    global _frozen_depth
    gc.collect()
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if not _frozen_depth:
            gc.unfreeze()


def _touch(fn: Callable[[dict[str, np.ndarray]], np.ndarray]) -> None:
    # One tiny call maps lazily loaded (mmapped) weights and runs one-off prepacking, so the load figure is the
    # model's real resident size rather than whatever happened to be paged in.
    ids = np.full((1, 8), 100, dtype=np.int64)
    fn({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})


def peak_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


# ------------------------------------------------------------------------------------------------- runners
@dataclass
class Runner:
    """A loaded model behind one call signature: encoded batch in, float32 logits out."""

    name: str
    kind: str  # "pytorch" or "onnx"
    path: Path
    spec: ModelSpec | None
    size_bytes: int
    load_rss_mb: float
    fn: Callable[[dict[str, np.ndarray]], np.ndarray]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.fn(batch)


def load_runner(path: str | Path, threads: int, name: str | None = None, *, spinning: bool = False) -> Runner:
    """Load a PyTorch HF model directory or an ONNX model (file, or directory holding model.onnx).

    Args:
        path: model directory or .onnx file.
        threads: intra-op threads (torch.set_num_threads / ORT intra_op_num_threads), the same for every runner.
        name: display name (default: pytorch_<dir> for PyTorch, the file stem for ONNX).
        spinning: ONNX Runtime's idle threads spin (`optimize.ort_spinning`; the server's is `serve.ort_spinning`).

    Raises:
        KitError: the path is neither.
    """
    import onnxruntime  # noqa: F401  (imported before measuring, so library load is not charged to the model)

    path = Path(path)
    if path.is_dir() and (path / "model.onnx").is_file():
        path = path / "model.onnx"
    if path.is_file() and path.suffix == ".onnx":
        trim()
        before = rss_mb()
        # The server's own session (kit.serve.model): what is measured here is what gets served.
        sess = make_session(path, threads, spinning=spinning)
        fn = lambda b: session_logits(sess, b)  # noqa: E731
        _touch(fn)
        trim()
        spec = ModelSpec.from_metadata(sess.get_modelmeta().custom_metadata_map)
        if spec is None and (path.parent / "config.json").is_file():
            from transformers import AutoConfig

            spec = model_spec(AutoConfig.from_pretrained(str(path.parent)))
        nm = name or (path.parent.name if path.stem == "model" else path.stem)
        return Runner(nm, "onnx", path, spec, path.stat().st_size, rss_mb() - before, fn)
    if path.is_dir() and (path / "config.json").is_file():
        import torch
        import transformers.models.bert.modeling_bert  # noqa: F401  (library code is not the model's memory)

        torch.set_num_threads(threads)
        trim()
        before = rss_mb()
        # Default attention (SDPA) and eager mode: how the model runs in PyTorch unless someone optimises it.
        model = load_classifier(path, eager=False)
        fn = lambda b: torch_logits(model, b)  # noqa: E731
        _touch(fn)
        trim()
        size = sum(f.stat().st_size for f in path.glob("*.safetensors")) or sum(
            f.stat().st_size for f in path.glob("*.bin")
        )
        return Runner(name or f"pytorch_{path.name}", "pytorch", path, model_spec(model), size, rss_mb() - before, fn)
    raise KitError(f"{path}: not an .onnx file, a directory with model.onnx, or a HF model directory (config.json)")


def read_texts(
    path: str | Path, text_column: str = "text", label_column: str | None = "label_id"
) -> tuple[list[str], np.ndarray | None]:
    """Texts (and integer labels when the column exists) from a Parquet or CSV file.

    Raises:
        DataError: file missing or the text column absent.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, encoding_errors="replace")
    if text_column not in df.columns:
        raise DataError(f"{path}: no column {text_column!r} (columns: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise DataError(f"{path}: no rows")
    labels = None
    if label_column and label_column in df.columns:
        labels = df[label_column].to_numpy(dtype=np.int64)
    return df[text_column].astype(str).tolist(), labels
