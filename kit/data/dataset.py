"""Data stage build: stream the source through cleaning and splitting (pandas or Spark) into Parquet split files.
Writes Parquet row groups as it goes, so memory stays bounded however large the input is (hash splits)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kit.core.errors import DataError
from kit.core.io import atomic_path, rel_path, write_labels
from kit.core.params import DataParams
from kit.core.reports import DataReport, DataStorage
from kit.data.clean import (
    DropCounts,
    assign_hash_split,
    assign_stratified_split,
    cap_rows,
    check_class_sizes,
    clean_chunk,
    dedup_chunks,
)
from kit.data.read import read_chunks
from kit.data.tables import source_version, write_split_table

__all__ = ["SPLITS", "build_dataset"]

SPLITS = ("train", "validation", "test")
SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string()), ("label_id", pa.int64())])
_MAX_LEN_BIN = 2000  # text lengths above this share the last histogram bin


@dataclass
class _Stats(DropCounts):
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {s: {} for s in SPLITS})
    lengths: dict[str, np.ndarray] = field(
        default_factory=lambda: {s: np.zeros(_MAX_LEN_BIN + 1, np.int64) for s in SPLITS}
    )
    words: dict[str, list[float]] = field(default_factory=lambda: {s: [0, 0] for s in SPLITS})

    def add(self, split: str, df: pd.DataFrame) -> None:
        for lab, n in df["label"].value_counts().items():
            self.counts[split][lab] = self.counts[split].get(lab, 0) + int(n)
        self.lengths[split] += np.bincount(
            np.minimum(df["text"].str.len().to_numpy(), _MAX_LEN_BIN), minlength=_MAX_LEN_BIN + 1
        )
        self.words[split][0] += float(df["text"].str.count(" ").sum() + len(df))
        self.words[split][1] += len(df)


def _length_stats(hist: np.ndarray) -> dict[str, float]:
    n = int(hist.sum())
    if n == 0:
        return {"mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    cum = np.cumsum(hist)
    lengths = np.arange(len(hist))
    return {
        "mean": round(float((hist * lengths).sum() / n), 2),
        "p50": int(np.searchsorted(cum, 0.5 * n)),
        "p95": int(np.searchsorted(cum, 0.95 * n)),
        "max": int(lengths[hist > 0].max()),
    }


def _label_set(p: DataParams, root: Path, version: int | None) -> list[str]:
    if p.labels is not None:
        return list(p.labels)
    found: set[str] = set()
    offset = 0
    for chunk in read_chunks(p, root, version):
        found.update(clean_chunk(chunk, p, offset)["label"].unique())
        offset += len(chunk)
    return sorted(found)


def _split_rows(
    chunks: Iterator[pd.DataFrame], p: DataParams, labels: list[str], write: Callable[[str, pd.DataFrame], None]
) -> None:
    """Assign each cleaned row its split and hand the rows to `write`, chunk by chunk (hash) or at once (stratified)."""
    if p.split_method == "hash":
        for df in chunks:
            if p.max_per_class or p.sample_size:
                raise DataError("data.max_per_class / data.sample_size need data.split_method 'stratified'")
            split = assign_hash_split(df, p)
            for s in SPLITS:
                write(s, df[split == s])
        return
    df = pd.concat(list(chunks), ignore_index=True)
    check_class_sizes(df["label"].value_counts(), labels, p)
    df = cap_rows(df, p)
    split = assign_stratified_split(df.reset_index(drop=True), p)
    df = df.reset_index(drop=True)
    for s in SPLITS:
        write(s, df[split == s])


def _write_splits(
    p: DataParams,
    labels: list[str],
    out_dir: Path,
    stats: _Stats,
    feed: Callable[[Callable[[str, pd.DataFrame], None]], None],
) -> None:
    """Write the rows `feed` hands over into out_dir/{train,validation,test}.parquet; each file replaces the old one
    only on success."""
    with ExitStack() as stack:
        tmp = {s: stack.enter_context(atomic_path(out_dir / f"{s}.parquet", suffix=".parquet")) for s in SPLITS}
        writers = {s: stack.enter_context(pq.ParquetWriter(tmp[s], SCHEMA, compression="zstd")) for s in SPLITS}

        def write(split: str, df: pd.DataFrame) -> None:
            if len(df):
                stats.add(split, df)
                ids = pd.Categorical(df["label"], categories=labels).codes.astype(np.int64)
                table = pa.table(
                    {
                        "text": pa.array(df["text"], pa.string()),
                        "label": pa.array(df["label"], pa.string()),
                        "label_id": ids,
                    },
                    schema=SCHEMA,
                )
                writers[split].write_table(table, row_group_size=p.chunk_rows)

        feed(write)
        for w in writers.values():
            w.close()
        total = {lab: sum(stats.counts[s].get(lab, 0) for s in SPLITS) for lab in labels}
        check_class_sizes(pd.Series(total), labels, p)


def _build(p: DataParams, root: Path, version: int | None, out_dir: Path) -> tuple[list[str], _Stats]:
    """Run the configured engine into the split files; returns the labels and the statistics."""
    stats = _Stats()
    if p.engine == "spark":
        from kit.data.spark import spark_split, split_chunks

        with tempfile.TemporaryDirectory(prefix="kit-spark-") as tmp:
            labels, parts = spark_split(p, root, version, stats, Path(tmp))

            def feed(write: Callable[[str, pd.DataFrame], None]) -> None:
                for s in SPLITS:
                    for df in split_chunks(parts[s], p.chunk_rows):
                        write(s, df)

            _write_splits(p, labels, out_dir, stats, feed)
        return labels, stats
    labels = _label_set(p, root, version)
    chunks = dedup_chunks(read_chunks(p, root, version), p, stats)
    _write_splits(p, labels, out_dir, stats, lambda write: _split_rows(chunks, p, labels, write))
    return labels, stats


def _storage(p: DataParams, root: Path, version: int | None, out_dir: Path) -> DataStorage | None:
    """Record the engine and source version, and write the format parquet_dataset/delta copy; None for defaults."""
    if p.engine == "pandas" and version is None and p.format == "parquet":
        return None
    storage = DataStorage(engine=p.engine, source_version=version)
    if p.format != "parquet":
        table, table_version = write_split_table(p, out_dir, {s: out_dir / f"{s}.parquet" for s in SPLITS})
        storage.table_format, storage.table_path, storage.table_version = p.format, rel_path(table, root), table_version
    return storage


def build_dataset(p: DataParams, root: str | Path = ".") -> DataReport:
    """Read, validate, clean, deduplicate, cap and split; write the Parquet splits and labels.json to data.out_dir.

    Args:
        p: validated data params.
        root: project root; data.path and data.out_dir are relative to it.

    Returns:
        The report (row counts, class balance, length stats, duplicates dropped, length histograms); not written
        (kit.data.stage.run_data writes it, with the plots).

    Raises:
        DataError: a missing file or column, bad text, unknown or missing labels, too few rows per class.
    """
    root = Path(root)
    version = source_version(p, root)
    out_dir = root / p.out_dir
    labels, stats = _build(p, root, version, out_dir)
    write_labels(out_dir / "labels.json", labels)
    rows = {s: sum(stats.counts[s].values()) for s in SPLITS}
    return DataReport(
        source=p.source,
        labels=labels,
        rows_read=stats.rows_read,
        rows_dropped_too_short=stats.too_short,
        duplicates_dropped=stats.duplicates,
        rows={**rows, "total": sum(rows.values())},
        class_balance={s: {lab: stats.counts[s].get(lab, 0) for lab in labels} for s in SPLITS},
        text_chars={s: _length_stats(stats.lengths[s]) for s in SPLITS},
        text_words_mean={s: round(w[0] / w[1], 2) if w[1] else 0.0 for s, w in stats.words.items()},
        length_histogram={s: stats.lengths[s].tolist() for s in SPLITS},
        storage=_storage(p, root, version, out_dir),
    )
