"""One window of the prediction log made ready to judge: its features, decoded embeddings and model version, the
latest window by rows or by age, and its verdict and signals (what the monitor stage and `kit monitor check` share)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kit.monitor.exporter import WindowSignals, window_signals
from kit.monitor.features import MonitorError, check_frame
from kit.monitor.verdict import window_verdict

if TYPE_CHECKING:
    from kit.monitor.profile import Reference

__all__ = ["log_window", "judge_window", "empty_window_signals", "latest_window", "EMBEDDING_COLUMN", "LABEL_COLUMN"]

EMBEDDING_COLUMN, LABEL_COLUMN, VERSION_COLUMN, TIME_COLUMN = "embedding", "label", "model_version", "time"


def _decode(value: str) -> np.ndarray:
    """One logged embedding: base64 of little-endian float16 bytes (the writer's encoding)."""
    return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f2").astype(np.float32)


def _embeddings(frame: pd.DataFrame, dim: int, what: str) -> np.ndarray | None:
    """The window's embeddings as a (rows, dim) array; None when no row carries one.

    Raises:
        MonitorError: some rows carry one and others not, or a row's is undecodable or of another dimension.
    """
    if EMBEDDING_COLUMN not in frame.columns:
        return None
    col = frame[EMBEDDING_COLUMN]
    present = col.notna()
    if not present.any():
        return None
    if not present.all():
        missing = frame.loc[~present]
        first = missing["request_id"].iloc[0] if "request_id" in frame.columns else missing.index[0]
        raise MonitorError(
            f"{what}: {len(missing)} of {len(frame)} row(s) have no embedding (first: {first!r}); "
            "the embedding drift needs all rows or none (was embedding logging switched mid-window?)"
        )
    rows = []
    for pos, value in enumerate(col):
        rid = frame["request_id"].iloc[pos] if "request_id" in frame.columns else frame.index[pos]
        try:
            vec = _decode(str(value))
        except (binascii.Error, ValueError) as exc:
            raise MonitorError(f"{what}: row {pos} ({rid!r}): embedding is not base64 float16 ({exc})") from exc
        if vec.shape[0] != dim:
            raise MonitorError(
                f"{what}: row {pos} ({rid!r}): embedding has {vec.shape[0]} dims, the reference {dim} "
                "(was the log written by another model?)"
            )
        rows.append(vec)
    return np.stack(rows)


def log_window(
    frame: pd.DataFrame, reference: Reference, *, what: str = "window"
) -> tuple[pd.DataFrame, np.ndarray | None, str]:
    """Split prediction-log rows into what a verdict needs.

    Args:
        frame: records from `read_prediction_log(...).frame` (any index; it is kept).
        reference: the reference the window will be judged against (its features and embedding dimension).
        what: how errors name the window.

    Returns:
        (the reference's feature columns plus the predicted label, with `frame`'s index; the decoded embeddings,
        row-aligned, or None when the reference or the log has none; the window's one model version).

    Raises:
        MonitorError: no rows, several model versions (each named with its row count), a missing feature, or
            embeddings on some rows only or of another dimension (the row named).
    """
    if frame.empty:
        raise MonitorError(f"{what}: no predictions")
    if VERSION_COLUMN not in frame.columns:
        raise MonitorError(f"{what}: no {VERSION_COLUMN!r} column (has {', '.join(map(str, frame.columns))})")
    counts = frame[VERSION_COLUMN].astype(str).value_counts().sort_index()
    if len(counts) > 1:
        named = ", ".join(f"{v!r} ({n} rows)" for v, n in counts.items())
        raise MonitorError(
            f"{what}: predictions of {len(counts)} model versions: {named}; judge one version per window"
        )
    prof = reference.profile
    check_frame(frame, prof.features, what)
    columns = [f.name for f in prof.features]
    if LABEL_COLUMN in frame.columns and LABEL_COLUMN not in columns:
        columns.append(LABEL_COLUMN)  # window_signals reads the predicted label even when it is not a feature
    emb = None if prof.embedding is None else _embeddings(frame, prof.embedding.dim, what)
    return frame[columns], emb, str(counts.index[0])


def judge_window(
    reference: Reference,
    frame: pd.DataFrame,
    *,
    min_rows: int,
    true_labels: pd.Series | None = None,
    what: str = "window",
) -> WindowSignals:
    """The verdict and signals of one window of prediction-log rows.

    Args:
        reference: the reference (made for the model version that served the window).
        frame: the window's prediction-log records.
        min_rows: below this many rows the status is "not enough data", never drift.
        true_labels: delayed labels aligned with `frame`'s index (NaN where none arrived), e.g. the `true_label`
            column of `join_delayed_labels`.
        what: how errors name the window.

    Returns:
        The window's signals (verdict, class shares, macro-F1 on the labelled rows).

    Raises:
        MonitorError: as `log_window`, or the reference was made for another model version (both named).
    """
    window, emb, version = log_window(frame, reference, what=what)
    verdict = window_verdict(reference, window, emb, model_version=version, min_rows=min_rows)
    return window_signals(verdict, reference, window, true_labels=true_labels, label_column=LABEL_COLUMN)


def empty_window_signals(reference: Reference, *, min_rows: int) -> WindowSignals:
    """The signals of a window without predictions (no traffic): "not enough data" for the reference's model.

    Publishing it keeps the monitor's verdict fresh (no stale-verdict alert) while no drift can be judged.
    """
    prof = reference.profile
    empty = pd.DataFrame({f.name: pd.Series(dtype=object) for f in prof.features})
    if LABEL_COLUMN not in empty.columns:
        empty[LABEL_COLUMN] = pd.Series(dtype=object)
    verdict = window_verdict(reference, empty, model_version=prof.model_version, min_rows=min_rows)
    return window_signals(verdict, reference, empty, label_column=LABEL_COLUMN)


def latest_window(
    frame: pd.DataFrame,
    *,
    rows: int | None = None,
    since_s: float | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """The newest records of a prediction log: the last `rows` by `time`, or those of the last `since_s` seconds.

    Args:
        frame: records from `read_prediction_log(...).frame` (`time` as UTC datetimes or ISO strings).
        rows: keep the newest this many records.
        since_s: keep the records no older than this many seconds before `now`.
        now: the window's end (default: the current UTC time).

    Returns:
        The window's records, oldest first, with their original index (possibly empty).

    Raises:
        MonitorError: both or neither of `rows` and `since_s`, a non-positive one, or no `time` column.
    """
    if (rows is None) == (since_s is None):
        raise MonitorError("latest window: give exactly one of rows or since_s")
    if TIME_COLUMN not in frame.columns:
        raise MonitorError(f"latest window: no {TIME_COLUMN!r} column (has {', '.join(map(str, frame.columns))})")
    if rows is not None and rows < 1:
        raise MonitorError(f"latest window: rows must be at least 1 (got {rows})")
    if since_s is not None and since_s <= 0:
        raise MonitorError(f"latest window: since_s must be positive (got {since_s})")
    times = pd.to_datetime(frame[TIME_COLUMN], utc=True, format="ISO8601")
    order = np.argsort(times.to_numpy(), kind="stable")
    ordered, times = frame.iloc[order], times.iloc[order]
    if rows is not None:
        return ordered.iloc[-rows:]
    end = now or datetime.now(UTC)
    end = end if end.tzinfo is not None else end.replace(tzinfo=UTC)  # a naive `now` is read as UTC
    start = pd.Timestamp(end - timedelta(seconds=float(since_s or 0)))
    return ordered[(times >= start).to_numpy()]
