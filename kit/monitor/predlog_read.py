"""Reading the prediction log back: a directory of closed JSONL files into one DataFrame (corrupt lines skipped and
counted, never a crash), and delayed labels (JSONL or CSV of request_id,label) joined by request id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from kit.monitor.features import MonitorError
from kit.serve.predlog import LOG_SUFFIX, OPEN_SUFFIX, PredictionRecord

__all__ = ["LogRead", "LabelJoin", "read_prediction_log", "read_delayed_labels", "join_delayed_labels"]

_RECORD = TypeAdapter(PredictionRecord)
_COLUMNS = [f.name for f in fields(PredictionRecord)]
_EXAMPLES = 5  # corrupt lines named in the summary; the count covers all of them


@dataclass
class LogRead:
    """A read prediction log: the records, the files read, and the corrupt lines skipped."""

    frame: pd.DataFrame
    files: list[Path]
    corrupt: int = 0
    corrupt_examples: list[str] = field(default_factory=list)  # "file:line: why"
    open_files: int = 0  # files the writer still holds (not read: they may end in a partial line)


@dataclass(frozen=True)
class LabelJoin:
    """How delayed labels matched the log: labels read, matched records, labels with no record, bad label rows."""

    labels: int
    matched: int
    unmatched: int
    corrupt: int


def _log_files(path: Path) -> tuple[list[Path], int]:
    if not path.exists():
        raise MonitorError(f"{path}: prediction log not found (is prediction logging on in the server?)")
    if path.is_file():
        return [path], 0
    files = sorted(p for p in path.glob(f"*{LOG_SUFFIX}") if not p.name.startswith("."))
    return files, len(list(path.glob(f".*{OPEN_SUFFIX}")))


def read_prediction_log(path: str | Path) -> LogRead:
    """Read one JSONL log file or every closed log file of a directory.

    Args:
        path: a log file or the log directory.

    Returns:
        The records (one row each, columns of PredictionRecord, `time` parsed as UTC) and the read's counts.

    Raises:
        MonitorError: the path is missing, holds no log file, or no valid record (names the path and, when all
            lines were corrupt, the first ones).
    """
    p = Path(path)
    files, open_files = _log_files(p)
    if not files:
        raise MonitorError(f"{p}: no prediction log files (*{LOG_SUFFIX}); {open_files} still open by a writer")
    rows: list[dict[str, object]] = []
    out = LogRead(frame=pd.DataFrame(), files=files, open_files=open_files)
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(_row(line))
                except (ValidationError, ValueError) as exc:
                    out.corrupt += 1
                    if len(out.corrupt_examples) < _EXAMPLES:
                        out.corrupt_examples.append(f"{f.name}:{n}: {str(exc).splitlines()[0][:120]}")
    if not rows:
        detail = f" ({out.corrupt} corrupt line(s), e.g. {out.corrupt_examples[0]})" if out.corrupt else ""
        raise MonitorError(f"{p}: prediction log is empty: no valid record in {len(files)} file(s){detail}")
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    out.frame = frame
    return out


def _row(line: str) -> dict[str, object]:
    rec = _RECORD.validate_json(line)
    datetime.fromisoformat(rec.time)  # ValueError: a record whose time cannot be read is corrupt
    return {name: getattr(rec, name) for name in _COLUMNS}


def read_delayed_labels(path: str | Path) -> tuple[pd.DataFrame, int]:
    """Read delayed labels: CSV with columns request_id,label, or JSONL objects with those keys.

    Returns:
        (frame of request_id, true_label; the last label wins for a repeated id, count of unusable rows).

    Raises:
        MonitorError: the file is missing, or a CSV lacks the two columns.
    """
    p = Path(path)
    if not p.is_file():
        raise MonitorError(f"{p}: delayed-label file not found")
    if p.suffix.lower() == ".csv":
        raw = pd.read_csv(p, dtype=str, keep_default_na=False)
        if not {"request_id", "label"} <= set(raw.columns):
            raise MonitorError(f"{p}: delayed labels need columns request_id,label (has {', '.join(raw.columns)})")
    else:
        items = []
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            items.append(obj if isinstance(obj, dict) else {})
        raw = pd.DataFrame(items, columns=["request_id", "label"])
    raw = raw[["request_id", "label"]]
    ok = raw["request_id"].notna() & raw["label"].notna() & (raw["request_id"].astype(str) != "")
    good = raw[ok].astype(str).drop_duplicates("request_id", keep="last")
    return good.rename(columns={"label": "true_label"}).reset_index(drop=True), int((~ok).sum())


def join_delayed_labels(log: pd.DataFrame, labels_path: str | Path) -> tuple[pd.DataFrame, LabelJoin]:
    """Add `true_label` to the log's records from a delayed-label file (NaN where no label arrived).

    Args:
        log: records from `read_prediction_log`.
        labels_path: the delayed-label file.

    Returns:
        (the log with a `true_label` column, the join's counts).
    """
    labels, corrupt = read_delayed_labels(labels_path)
    joined = log.drop(columns=["true_label"], errors="ignore").merge(labels, on="request_id", how="left")
    known = set(log["request_id"])
    unmatched = int((~labels["request_id"].isin(known)).sum())
    matched = int(joined["true_label"].notna().sum())
    return joined, LabelJoin(labels=len(labels), matched=matched, unmatched=unmatched, corrupt=corrupt)
