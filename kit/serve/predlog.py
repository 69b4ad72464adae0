"""The prediction log's writer: one record per served prediction (features, label, latency, embedding; a text hash,
raw text only on request), computed and written off the request path to rotating JSONL files (records: predrecord)."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson
from pydantic import BaseModel, ConfigDict, Field

from kit.core.params import PredictionLogParams
from kit.serve.predrecord import (
    PendingRecord,
    PredictionLogError,
    PredictionRecord,
    decode_embeddings,
    encode_embedding,
    encode_embeddings,
    iso_time,
    make_record,
    utc_now,
)
from kit.serve.textfeatures import text_hash

__all__ = [
    "PredictionRecord",
    "PendingRecord",
    "PredictionLogError",
    "LogSettings",
    "PredictionLogWriter",
    "make_record",
    "utc_now",
    "encode_embedding",
    "decode_embeddings",
    "OPEN_SUFFIX",
    "LOG_SUFFIX",
]

_FIELDS = tuple(f.name for f in fields(PredictionRecord))
# orjson: the writer thread holds the GIL the server's threads need, and the stdlib's encoder was half its time.
_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY

LOG_SUFFIX, OPEN_SUFFIX = ".jsonl", ".jsonl.open"


class LogSettings(BaseModel):
    """Where and how the prediction log is written (defaults as serve.prediction_log names them).

    Args:
        directory: the folder the JSONL files go to.
        log_text: keep the raw text in records (privacy: off by default; only the hash is kept).
        max_records: records per file before it is closed and a new one opened.
        max_bytes: bytes per file before rotation.
        max_age_s: seconds a file stays open, so readers see recent records in closed files.
        queue_size: records waiting to be written; beyond it `log` drops and counts rather than block a request.
        batch_size: records the writer thread takes from the queue per write.
        flush_interval_s: how long the writer thread waits for records before checking rotation and shutdown.
        gather_s: after the first record, how long the writer lets more gather before writing them together.
        prefix: file name prefix.
    """

    model_config = ConfigDict(extra="forbid")

    directory: Path
    log_text: bool = False
    max_records: int = Field(100_000, ge=1)
    max_bytes: int = Field(64 * 2**20, ge=1024)
    max_age_s: float = Field(300.0, gt=0)
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(512, ge=1)
    flush_interval_s: float = Field(0.5, gt=0)
    gather_s: float = Field(0.1, ge=0)
    prefix: str = "predictions"

    @classmethod
    def from_params(cls, p: PredictionLogParams, root: Path) -> LogSettings:
        """The settings of `serve.prediction_log`, its `dir` taken relative to `root` (an absolute dir stays)."""
        return cls(
            directory=root / p.dir, log_text=p.log_text, max_records=p.max_records, max_bytes=p.max_bytes,
            max_age_s=p.max_age_s, queue_size=p.queue_size,
        )  # fmt: skip


class PredictionLogWriter:
    """Batched, rotating JSONL writer owned by the server: `log` only enqueues; a daemon thread writes. Pending
    records (raw text) get their hash and their embedding encoded in that thread.

    Closed files are renamed atomically from a hidden `.<name>.jsonl.open` to `<name>.jsonl`, so a reader never
    sees a half-written file. A FastAPI app owns one through its lifespan::

        writer = PredictionLogWriter(settings).start()   # before `yield`
        await asyncio.to_thread(writer.close)            # after `yield`: flushes what is queued
    """

    def __init__(self, settings: LogSettings, *, on_count: Callable[[str, int], None] | None = None):
        """Args:
        settings: where and how to write.
        on_count: called with ("written" | "dropped", n) whenever records are written or dropped (metrics).
        """
        self.settings = settings
        self._on_count = on_count or (lambda outcome, n: None)
        self._queue: queue.Queue[PredictionRecord | PendingRecord] = queue.Queue(maxsize=settings.queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._file: IO[bytes] | None = None
        self._file_path: Path | None = None
        self._file_records = self._file_bytes = 0
        self._opened_at = 0.0
        self._seq = 0
        self.dropped = self.written = 0
        self.files: list[Path] = []
        self.error: str | None = None

    def start(self) -> PredictionLogWriter:
        """Create the directory and start the writer thread; returns self."""
        self.settings.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def log(self, records: Sequence[PredictionRecord | PendingRecord]) -> int:
        """Enqueue records without blocking; those that find the queue full (or the writer closed) are dropped and
        counted in `dropped`. Returns how many were accepted."""
        accepted = 0
        if not self._stop.is_set():
            for rec in records:
                try:
                    self._queue.put_nowait(rec)
                except queue.Full:
                    break
                accepted += 1
        if accepted < len(records):
            self._count("dropped", len(records) - accepted)
        return accepted

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking records, write everything queued and close the last file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            # A `log` racing with shutdown (or a writer never started) leaves records no thread will write.
            lost = 0
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                lost += 1
            if lost:
                self._count("dropped", lost)

    def __enter__(self) -> PredictionLogWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Counters for the server's metrics: written, dropped, queued, closed files."""
        return {
            "written": self.written,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
            "files": len(self.files),
        }

    def _count(self, outcome: str, n: int) -> None:
        with self._lock:
            if outcome == "written":
                self.written += n
            else:
                self.dropped += n
        self._on_count(outcome, n)

    # ------------------------------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._write(batch)
            elif self._stop.is_set() and self._queue.empty():
                break
            if self._file is not None and time.monotonic() - self._opened_at >= self.settings.max_age_s:
                self._rotate()
        self._rotate()

    def _take(self) -> list[PredictionRecord | PendingRecord]:
        try:
            batch = [self._queue.get(timeout=self.settings.flush_interval_s)]
        except queue.Empty:
            return []
        # Let records gather before waking again: a wake-up per record costs the server's threads more CPU (thread
        # switches, GIL hand-offs) than the writing itself. Shutdown drains at once.
        if not self._stop.is_set() and self._queue.qsize() < self.settings.batch_size:
            self._stop.wait(self.settings.gather_s)
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _rows(self, batch: list[PredictionRecord | PendingRecord]) -> list[dict[str, object]]:
        """Each record as the dict its JSON line holds (field order as PredictionRecord's). The writer thread holds
        the GIL the server's threads need while it works, so this is the cheap path: dicts built directly, every
        pending embedding converted to float16 in one call."""
        pending = [r.embedding for r in batch if isinstance(r, PendingRecord) and r.embedding is not None]
        halves = iter(encode_embeddings(pending)) if pending else iter(())
        rows = []
        for r in batch:
            if isinstance(r, PredictionRecord):
                row = {name: getattr(r, name) for name in _FIELDS}  # asdict deep-copies: 10x slower
            else:
                row = {
                    "request_id": r.request_id, "time": iso_time(r.timestamp), "text_hash": text_hash(r.text),
                    "length_chars": len(r.text), "length_tokens": r.length_tokens, "unk_rate": r.unk_rate,
                    "subword_rate": r.subword_rate, "label": r.label, "confidence": r.confidence,
                    "latency_ms": r.latency_ms, "model_version": r.model_version, "text": r.text,
                    "embedding": None if r.embedding is None else next(halves),
                }  # fmt: skip
            if not self.settings.log_text:
                del row["text"]
            if row["embedding"] is None:  # lines stay as they were for servers that log no embeddings
                del row["embedding"]
            rows.append(row)
        return rows

    def _write(self, batch: list[PredictionRecord | PendingRecord]) -> None:
        s = self.settings
        done = 0
        try:
            for row in self._rows(batch):
                line = orjson.dumps(row, option=_JSON_OPTIONS)  # compact, UTF-8, one line
                if self._file is None:
                    self._open()
                assert self._file is not None
                self._file.write(line)
                self._file_records += 1
                self._file_bytes += len(line)
                done += 1
                if self._file_records >= s.max_records or self._file_bytes >= s.max_bytes:
                    self._rotate()
        except Exception as exc:  # a full disk (or a bug) must not take the server down: count the loss
            self.error = f"{self._file_path or s.directory}: {type(exc).__name__}: {exc}"
            self._count("dropped", len(batch) - done)
        if done:
            self._count("written", done)

    def _open(self) -> None:
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{self.settings.prefix}-{stamp}-{os.getpid()}-{self._seq:06d}"
        self._file_path = self.settings.directory / f".{name}{OPEN_SUFFIX}"
        self._file = open(self._file_path, "wb")  # noqa: SIM115 - kept open across batches
        self._file_records = self._file_bytes = 0
        self._opened_at = time.monotonic()

    def _rotate(self) -> None:
        if self._file is None or self._file_path is None:
            return
        final = self._file_path.with_name(self._file_path.name[1 : -len(OPEN_SUFFIX)] + LOG_SUFFIX)
        try:
            self._file.close()
            os.replace(self._file_path, final)
            self.files.append(final)
        except OSError as exc:  # the records stay in the hidden file; the next batch opens a new one
            self.error = f"{self._file_path}: {exc}"
        self._file, self._file_path = None, None
