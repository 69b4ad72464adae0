"""Offline batch scoring of one shard of a Parquet file with the serving model (ONNX Runtime + tokenizers, no torch).
This is what each pod of the Indexed batch Job runs: `kit deploy batch-score` with its JOB_COMPLETION_INDEX."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kit.core.errors import DataError, DeployError
from kit.core.io import atomic_path

__all__ = ["shard_bounds", "part_path", "score_shard"]


def shard_bounds(n_rows: int, shards: int, index: int) -> tuple[int, int]:
    """Row range [start, stop) of shard `index` of `shards` contiguous, near-equal shards.

    Contiguous ranges let each pod read only its own row groups and make the concatenated parts keep input order.
    """
    if shards < 1:
        raise DeployError(f"--shards must be >= 1, got {shards}")
    if not 0 <= index < shards:
        raise DeployError(f"shard index {index} is outside [0, {shards}) (JOB_COMPLETION_INDEX / --shard-index)")
    base, extra = divmod(n_rows, shards)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def part_path(output_dir: str | Path, shards: int, index: int) -> Path:
    """Where shard `index` writes its scores: part-00003-of-00008.parquet."""
    return Path(output_dir) / f"part-{index:05d}-of-{shards:05d}.parquet"


def score_shard(
    model_dir: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    *,
    shards: int,
    index: int,
    text_column: str = "text",
    batch_size: int = 32,
    threads: int = 2,
    max_length: int = 64,
) -> dict[str, Any]:
    """Score rows of shard `index` and write them (atomically) as one Parquet part.

    Args:
        model_dir: serving model dir (model.onnx, tokenizer.json, labels.json; serving.json gives max_length).
        input_path: Parquet file with a text column.
        output_dir: directory for the parts.
        shards, index: this pod's shard of the input.
        text_column: column to score.
        batch_size: texts per model run.
        threads: ONNX Runtime intra-op threads.
        max_length: truncation length when the model dir has no serving.json.

    Returns:
        Summary: rows, shard range, output file, seconds, rows per second.

    Raises:
        DataError: the input is missing, not Parquet, or lacks the column / has null texts.
        ModelDirError: the model dir is unusable.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kit.serve.model import OnnxTextClassifier, read_model_dir

    input_path = Path(input_path)
    if not input_path.is_file():
        raise DataError(f"{input_path}: input file not found")
    try:
        pf = pq.ParquetFile(input_path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{input_path}: not a Parquet file: {exc}") from None
    if text_column not in pf.schema_arrow.names:
        raise DataError(f"{input_path}: no column {text_column!r} (columns: {', '.join(pf.schema_arrow.names)})")
    start, stop = shard_bounds(pf.metadata.num_rows, shards, index)
    table = pf.read(columns=[text_column]).slice(start, stop - start)
    col = table.column(text_column)
    if col.null_count:
        raise DataError(f"{input_path}: column {text_column!r} has {col.null_count} null(s) in rows {start}-{stop}")
    texts = [str(t) for t in col.to_pylist()]

    meta = read_model_dir(model_dir, max_length)
    model = OnnxTextClassifier(meta, threads)
    t0 = time.perf_counter()
    probs = np.zeros((len(texts), len(meta.labels)), dtype=np.float32)
    # Sorting by length before batching keeps padding small; scores go back to their rows by index.
    order = np.argsort([len(t) for t in texts], kind="stable")
    for i in range(0, len(texts), batch_size):
        idx = order[i : i + batch_size]
        probs[idx] = model.predict_proba([texts[j] for j in idx])
    seconds = time.perf_counter() - t0

    label_id = probs.argmax(axis=1) if len(texts) else np.zeros(0, dtype=np.int64)
    columns: dict[str, Any] = {
        "row": pa.array(np.arange(start, stop, dtype=np.int64)),
        "label": pa.array([meta.labels[i] for i in label_id.tolist()], type=pa.string()),
        "label_id": pa.array(label_id.astype(np.int64)),
        "score": pa.array(probs.max(axis=1) if len(texts) else np.zeros(0, np.float32)),
    }
    for j, lab in enumerate(meta.labels):
        columns[f"p_{lab}"] = pa.array(probs[:, j])
    out = pa.table(columns).replace_schema_metadata(
        {"model_version": meta.version, "model_variant": meta.variant, "shard": f"{index}/{shards}"}
    )
    target = part_path(output_dir, shards, index)
    with atomic_path(target, suffix=".parquet") as tmp:
        pq.write_table(out, tmp)
    return {
        "shard": index,
        "shards": shards,
        "rows": len(texts),
        "range": [start, stop],
        "output": str(target),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(texts) / seconds, 1) if seconds > 0 else None,
        "model_version": meta.version,
    }
