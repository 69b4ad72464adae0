"""What the prediction log holds: the record of one served prediction, the pending form the server enqueues (raw
text, features not yet computed), and the compact embedding codec (base64 of little-endian float16)."""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from kit.core.errors import KitError
from kit.serve.textfeatures import TextFeatures

__all__ = [
    "PredictionRecord",
    "PendingRecord",
    "PredictionLogError",
    "make_record",
    "utc_now",
    "encode_embedding",
    "encode_embeddings",
    "iso_time",
    "decode_embeddings",
    "EMBEDDING_DTYPE",
]

# Half precision halves the log against float32; drift statistics on embeddings do not need more than 3 digits.
EMBEDDING_DTYPE = np.dtype("<f2")


class PredictionLogError(KitError):
    """A prediction log value cannot be used: names the row and what is wrong with it."""


def utc_now() -> str:
    """The current time as a UTC ISO-8601 string (the record's `time`)."""
    return iso_time(time.time())


def iso_time(timestamp: float) -> str:
    """A Unix timestamp (`time.time()`) as `utc_now` writes it: UTC ISO-8601, milliseconds."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One served prediction as logged. `text` stays None unless the log's settings allow raw text; `embedding` is
    the pooled sentence embedding (`encode_embedding`), None when the server does not log embeddings."""

    request_id: str
    time: str
    text_hash: str
    length_chars: int
    length_tokens: int
    unk_rate: float
    subword_rate: float
    label: str
    confidence: float
    latency_ms: float
    model_version: str
    text: str | None = None
    embedding: str | None = None


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A prediction as the server enqueues it: the raw text, its token figures from the model's own batch and the
    embedding row, so that hashing, encoding and formatting the time happen in the writer thread, not on the
    request path. `timestamp` is `time.time()` when the request was answered."""

    request_id: str
    timestamp: float
    text: str
    label: str
    confidence: float
    latency_ms: float
    model_version: str
    length_tokens: int
    unk_rate: float
    subword_rate: float
    embedding: np.ndarray | None = None


def make_record(
    features: TextFeatures,
    request_id: str,
    label: str,
    *,
    confidence: float,
    latency_ms: float,
    model_version: str,
    text: str | None = None,
    embedding: str | None = None,
    time: str | None = None,
) -> PredictionRecord:
    """The record of one prediction from its text features (the writer drops `text` unless raw text is allowed).

    Args:
        time: when it was predicted (None: now).
    """
    return PredictionRecord(
        request_id=request_id, time=time or utc_now(), text_hash=features.text_hash,
        length_chars=features.length_chars, length_tokens=features.length_tokens, unk_rate=features.unk_rate,
        subword_rate=features.subword_rate, label=label, confidence=confidence, latency_ms=latency_ms,
        model_version=model_version, text=text, embedding=embedding,
    )  # fmt: skip


def encode_embedding(vec: np.ndarray) -> str:
    """One embedding vector as base64 of its little-endian float16 bytes (compact in a JSON line).

    Args:
        vec: a 1-D float vector (any float dtype; flattened).

    Returns:
        ASCII base64 text; `decode_embeddings` reads it back as float32.
    """
    return encode_embeddings([np.asarray(vec).reshape(-1)])[0]


def encode_embeddings(vecs: Sequence[np.ndarray]) -> list[str]:
    """`encode_embedding` of each of several vectors of one dimension, converted to float16 in one call."""
    arr = np.asarray(vecs, dtype=np.float32).reshape(len(vecs), -1).astype(EMBEDDING_DTYPE)
    return [binascii.b2a_base64(row.tobytes(), newline=False).decode("ascii") for row in arr]


def _is_missing(value: object) -> bool:
    # A pandas column of str/None may turn its None into NaN (after a merge, a concat): both mean "not logged".
    return value is None or (isinstance(value, float) and math.isnan(value))


def _decode_one(i: int, value: object) -> np.ndarray:
    if not isinstance(value, str):
        raise PredictionLogError(f"embedding of row {i}: expected base64 text, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PredictionLogError(f"embedding of row {i}: not valid base64") from None
    if not raw or len(raw) % EMBEDDING_DTYPE.itemsize:
        raise PredictionLogError(f"embedding of row {i}: {len(raw)} bytes is not a whole number of float16 values")
    return np.frombuffer(raw, dtype=EMBEDDING_DTYPE).astype(np.float32)


def decode_embeddings(values: Sequence[object]) -> np.ndarray | None:
    """The logged embeddings of a sequence of records as one matrix.

    Args:
        values: the records' `embedding` values (str, or None / NaN where none was logged).

    Returns:
        float32 [len(values), dim], NaN rows where no embedding was logged; None when no value holds one.

    Raises:
        PredictionLogError: a value is not valid base64 of float16 values, or its dimension differs from the first
            row's (names the row index).
    """
    rows: list[np.ndarray | None] = []
    dim: int | None = None
    first = -1
    for i, value in enumerate(values):
        if _is_missing(value):
            rows.append(None)
            continue
        vec = _decode_one(i, value)
        if dim is None:
            dim, first = len(vec), i
        elif len(vec) != dim:
            raise PredictionLogError(f"embedding of row {i}: dimension {len(vec)}, but row {first} has {dim}")
        rows.append(vec)
    if dim is None:
        return None
    out = np.full((len(rows), dim), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row
    return out
