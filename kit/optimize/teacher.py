"""The teacher's soft labels for distillation: the rows tokenised once, scored once, and kept between stage runs.
The logits are cached under models/optimize/teacher_logits, keyed by the teacher's files, the rows and max_length."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.io import atomic_path, sha256_file, write_json
from kit.core.progress import progress

__all__ = ["Rows", "tokenise", "pad_batch", "teacher_logits", "rows_logits", "logits_key", "cached_logits"]

Rows = dict[str, list[list[int]]]  # input_ids and token_type_ids per text, unpadded (truncated at max_length)


def tokenise(tokenizer: Any, texts: list[str]) -> Rows:
    """Tokenise `texts` once with the serving tokenizer (kit.serve.model.load_tokenizer), without padding.

    Returns:
        {"input_ids": [...], "token_type_ids": [...]}, one unpadded list per text.
    """
    encs = tokenizer.encode_batch(list(texts))
    lens = [sum(e.attention_mask) for e in encs]  # the batch came back padded to its longest text
    return {
        "input_ids": [e.ids[:n] for e, n in zip(encs, lens, strict=True)],
        "token_type_ids": [e.type_ids[:n] for e, n in zip(encs, lens, strict=True)],
    }


def pad_batch(rows: Rows, idx: Any, pad_id: int) -> dict[str, np.ndarray]:
    """The rows `idx` padded to their longest: the int64 arrays of the serving contract (as kit.serve.model.encode)."""
    ids = [rows["input_ids"][i] for i in idx]
    n = max(len(x) for x in ids)
    out = np.full((len(ids), n), pad_id, dtype=np.int64)
    types = np.zeros((len(ids), n), dtype=np.int64)
    mask = np.zeros((len(ids), n), dtype=np.int64)
    for j, i in enumerate(idx):
        k = len(rows["input_ids"][i])
        out[j, :k], types[j, :k], mask[j, :k] = rows["input_ids"][i], rows["token_type_ids"][i], 1
    return {"input_ids": out, "attention_mask": mask, "token_type_ids": types}


def rows_logits(
    teacher: Any,
    rows: Rows,
    pad_id: int,
    *,
    batch_size: int = 64,
    onnx_path: str | Path | None = None,
    threads: int = 2,
) -> np.ndarray:
    """The teacher's logits for tokenised rows, sorted by length and padded per batch (what each row gets alone).

    Args:
        teacher: the HF classifier (its PyTorch forward is used when onnx_path is None).
        rows: from `tokenise`.
        pad_id: the tokenizer's pad id.
        batch_size: rows per forward pass.
        onnx_path: a parity-checked fp32 ONNX export of the same teacher; when given, ONNX Runtime computes the
            logits (same values within the parity tolerance, about twice as fast as PyTorch on CPU).
        threads: ORT intra-op threads.
    """
    from kit.optimize.export import torch_logits
    from kit.serve.model import make_session, session_logits

    n = len(rows["input_ids"])
    out = np.empty((n, teacher.config.num_labels), dtype=np.float32)
    order = np.argsort([len(x) for x in rows["input_ids"]], kind="stable")
    teacher.eval()
    sess = make_session(onnx_path, threads) if onnx_path else None
    for i in progress(range(0, n, batch_size), desc="teacher logits", unit="batch"):
        idx = order[i : i + batch_size]
        batch = pad_batch(rows, idx, pad_id)
        out[idx] = session_logits(sess, batch) if sess is not None else torch_logits(teacher, batch)
    return out


def teacher_logits(
    teacher: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    batch_size: int = 64,
    onnx_path: str | Path | None = None,
    threads: int = 2,
) -> np.ndarray:
    """The teacher's logits for `texts` (tokenised with the serving tokenizer; see `rows_logits`)."""
    pad_id = (tokenizer.padding or {}).get("pad_id", 0)
    return rows_logits(
        teacher, tokenise(tokenizer, texts), pad_id, batch_size=batch_size, onnx_path=onnx_path, threads=threads
    )


def logits_key(teacher_dir: str | Path, texts: list[str], max_length: int) -> str:
    """What the teacher's logits depend on, hashed: its weights, config and tokenizer files, max_length, the rows."""
    teacher_dir = Path(teacher_dir)
    files = sorted(teacher_dir.glob("*.safetensors")) + sorted(teacher_dir.glob("*.bin"))
    files += [p for p in (teacher_dir / "config.json", teacher_dir / "tokenizer.json") if p.is_file()]
    h = hashlib.sha256(sha256_file(*files).encode())
    h.update(f"max_length={max_length}\n".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def cached_logits(cache_dir: str | Path, key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """The logits stored under `cache_dir` for `key`, else `compute()`'s, stored there (one entry: the last key).

    Returns:
        (logits, whether they came from the cache).
    """
    cache_dir = Path(cache_dir)
    meta_path, data_path = cache_dir / "key.json", cache_dir / "logits.npy"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            logits = np.load(data_path)
            if list(logits.shape) == meta.get("shape"):
                return logits, True
    except (OSError, ValueError):
        pass  # no cache yet, or a torn one: compute afresh
    logits = compute()
    with atomic_path(data_path, suffix=".npy") as tmp:
        np.save(tmp, logits)
    write_json(meta_path, {"key": key, "shape": list(logits.shape)})
    return logits, False
