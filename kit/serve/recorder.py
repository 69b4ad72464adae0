"""The server's side of the prediction log (serve.prediction_log): request ids, and the recorder the app hands each
answered request to; it only enqueues, the log's writer thread tokenizes, encodes and writes (kit.serve.predlog)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kit.core.params import PredictionLogParams
from kit.serve.predlog import LogSettings, PendingRecord, PredictionLogWriter

__all__ = ["REQUEST_ID_HEADER", "request_id", "record_ids", "PredictionRecorder"]

REQUEST_ID_HEADER = "x-request-id"
# Ids end up in log files, access logs and delayed-label joins: keep them short and free of separators and quotes.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(header: str | None) -> str | None:
    """The request's id: the client's `x-request-id` when given, else a fresh uuid4 hex.

    Args:
        header: the header's value (None: absent).

    Returns:
        The id, or None when the client's value is not 1-128 characters of [A-Za-z0-9._:-] (the caller refuses it).
    """
    if header is None:
        return uuid.uuid4().hex
    return header if _REQUEST_ID.fullmatch(header) else None


def record_ids(rid: str, n: int) -> list[str]:
    """Record ids of a request's texts: the request id itself for one text, `<rid>-<i>` for each of several."""
    return [rid] if n == 1 else [f"{rid}-{i}" for i in range(n)]


class PredictionRecorder:
    """Owns the prediction log's writer for one server; `record` is cheap enough for the request path."""

    def __init__(self, writer: PredictionLogWriter, model_version: str, embeddings: bool):
        self.writer, self.model_version, self.embeddings = writer, model_version, embeddings

    @classmethod
    def start(
        cls,
        params: PredictionLogParams,
        model_version: str,
        *,
        root: Path | None = None,
        on_count: Callable[[str, int], None] | None = None,
    ) -> PredictionRecorder:
        """Start the writer thread.

        Args:
            params: serve.prediction_log.
            model_version: written in every record.
            root: what a relative `params.dir` is relative to (None: the working directory).
            on_count: the writer's ("written" | "dropped", n) callback (metrics).
        """
        settings = LogSettings.from_params(params, Path.cwd() if root is None else root)
        writer = PredictionLogWriter(settings, on_count=on_count)
        return cls(writer.start(), model_version, params.embeddings)

    def record(
        self,
        rid: str,
        texts: Sequence[str],
        labels: Sequence[str],
        confidences: Sequence[float],
        latency_ms: float,
        pooled: np.ndarray | None,
        counts: np.ndarray,
    ) -> int:
        """Enqueue one record per text of an answered request (never blocks; a full queue drops and counts).

        Args:
            rid: the request id (`record_ids` names each text's record).
            texts, labels, confidences: row-aligned, one per text.
            latency_ms: the request's server-side latency, given to each of its records.
            pooled: pooled embeddings [n, hidden] (None: not logged).
            counts: token figures [n, 3] from the model's batch (`TokenCounter.counts`).

        Returns:
            How many records were accepted.
        """
        now = time.time()
        rows = pooled if self.embeddings and pooled is not None else [None] * len(texts)
        return self.writer.log([
            PendingRecord(request_id=i, timestamp=now, text=t, label=lab, confidence=float(c), latency_ms=latency_ms,
                          model_version=self.model_version, length_tokens=int(k[0]), unk_rate=float(k[1]),
                          subword_rate=float(k[2]), embedding=e)
            for i, t, lab, c, e, k in zip(record_ids(rid, len(texts)), texts, labels, confidences, rows,
                                          counts.tolist(), strict=True)
        ])  # fmt: skip

    def close(self) -> None:
        """Write everything queued and close the last file (blocks: run it in a thread from async code)."""
        self.writer.close()
