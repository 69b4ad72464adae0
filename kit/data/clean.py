"""Data stage cleaning: validate and normalise chunks, drop duplicate texts, cap classes and assign splits.
Every check raises a DataError naming the params key, column and 1-based input rows at fault."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit.core.errors import DataError
from kit.core.params import DataParams
from kit.data.read import TEXT_DTYPE

__all__ = [
    "DropCounts",
    "clean_chunk",
    "dedup_chunks",
    "assign_hash_split",
    "assign_stratified_split",
    "cap_rows",
    "check_class_sizes",
]


@dataclass
class DropCounts:
    """Rows read, and rows dropped as too short or as duplicates, by dedup_chunks."""

    rows_read: int = 0
    too_short: int = 0
    duplicates: int = 0


def _rows(mask: np.ndarray, offset: int) -> str:
    idx = np.flatnonzero(mask)[:5] + offset + 1
    more = f" and {int(mask.sum()) - len(idx)} more" if mask.sum() > len(idx) else ""
    return ", ".join(map(str, idx)) + more


def clean_chunk(df: pd.DataFrame, p: DataParams, offset: int = 0) -> pd.DataFrame:
    """Validate and normalise one chunk; raise DataError naming the column and (1-based) rows at fault.

    Args:
        df: raw chunk with columns text, label.
        p: the data params (column names for messages, allowed labels, min_chars).
        offset: rows before this chunk, so messages name rows of the whole input.

    Returns:
        The chunk with whitespace-normalised text and stripped string labels (Arrow-backed strings, so the
        work runs in Arrow's vectorised kernels, not per-row Python); too-short texts dropped.
    """
    text, label = df["text"], df["label"]
    missing = text.isna().to_numpy()
    if missing.any():
        raise DataError(f"data.text_column {p.text_column!r}: empty text in rows {_rows(missing, offset)}")
    if not isinstance(text.dtype, pd.StringDtype):
        not_str = ~text.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if not_str.any():
            kinds = sorted({type(v).__name__ for v in text[not_str]})
            raise DataError(
                f"data.text_column {p.text_column!r}: non-string values ({', '.join(kinds)}) "
                f"in rows {_rows(not_str, offset)}"
            )
        text = text.astype(TEXT_DTYPE)
    norm = text.str.replace(r"\s+", " ", regex=True).str.strip()
    lengths = norm.str.len().to_numpy()
    empty = lengths == 0
    if empty.any():
        raise DataError(f"data.text_column {p.text_column!r}: empty text in rows {_rows(empty, offset)}")
    if not isinstance(label.dtype, pd.StringDtype):
        label = label.map(lambda v: None if pd.isna(v) else str(v)).astype(TEXT_DTYPE)
    lab = label.str.strip()
    no_label = (lab.isna() | (lab.str.len() == 0)).to_numpy(dtype=bool)
    if no_label.any():
        raise DataError(f"data.label_column {p.label_column!r}: missing label in rows {_rows(no_label, offset)}")
    if p.labels is not None:
        unknown = (~lab.isin(p.labels)).to_numpy(dtype=bool)
        if unknown.any():
            seen = sorted(set(lab[unknown]))[:5]
            raise DataError(
                f"data.label_column {p.label_column!r}: unknown labels {seen} in rows {_rows(unknown, offset)} "
                f"(data.labels allows {p.labels})"
            )
    out = pd.DataFrame({"text": norm, "label": lab})
    return out[lengths >= p.min_chars]


def _hash(texts: pd.Series, key: str) -> np.ndarray:
    """64-bit SipHash of each text: stable across runs, processes and machines (unlike Python's hash())."""
    return pd.util.hash_pandas_object(texts, index=False, hash_key=key.ljust(16, "0")[:16]).to_numpy()


def dedup_chunks(chunks: Iterator[pd.DataFrame], p: DataParams, stats: DropCounts) -> Iterator[pd.DataFrame]:
    """Clean each raw chunk and drop exact duplicate texts (first occurrence kept) across all chunks, remembering
    only 8 bytes per text; `stats` counts what was read and dropped. Yields cleaned rows plus their hash `_h`."""
    from tqdm import tqdm

    seen = np.empty(0, dtype=np.uint64)
    offset = 0
    bar = tqdm(desc="reading", unit=" rows", unit_scale=True, file=sys.stdout)
    for raw in chunks:
        bar.update(len(raw))
        stats.rows_read += len(raw)
        df = clean_chunk(raw, p, offset)
        offset += len(raw)
        stats.too_short += len(raw) - len(df)
        h = _hash(df["text"], "dedup")
        pos = np.searchsorted(seen, h).clip(max=max(len(seen) - 1, 0))
        dup = (seen[pos] == h) if len(seen) else np.zeros(len(h), bool)
        dup |= pd.Series(h).duplicated().to_numpy()
        stats.duplicates += int(dup.sum())
        new = np.sort(h[~dup])
        # One O(n) insert per chunk keeps `seen` sorted with a single transient copy (union1d makes several).
        seen = np.insert(seen, np.searchsorted(seen, new), new)
        yield df[~dup].assign(_h=h[~dup])
    bar.close()


def assign_hash_split(df: pd.DataFrame, p: DataParams) -> pd.Series:
    """Split name per row as a pure function of its text and data.seed (streams; shares right on average)."""
    u = (_hash(df["text"], f"split{p.seed}") % 1_000_000) / 1_000_000
    return pd.Series(
        np.where(u < p.test_fraction, "test", np.where(u < p.test_fraction + p.val_fraction, "validation", "train")),
        index=df.index,
    )


def assign_stratified_split(df: pd.DataFrame, p: DataParams) -> pd.Series:
    """Split name per row with exact class proportions (scikit-learn, seeded with data.seed)."""
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(df.index, test_size=p.test_fraction, stratify=df["label"], random_state=p.seed)
    val_share = p.val_fraction / (1 - p.test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=df.loc[rest, "label"], random_state=p.seed)
    split = pd.Series("train", index=df.index)
    split[val], split[test] = "validation", "test"
    return split


def cap_rows(df: pd.DataFrame, p: DataParams) -> pd.DataFrame:
    """Apply data.max_per_class and data.sample_size (seeded), then order rows by text hash."""
    if p.max_per_class:
        keep = [g.sample(n=min(len(g), p.max_per_class), random_state=p.seed).index for _, g in df.groupby("label")]
        df = df.loc[np.concatenate(keep)]
    if p.sample_size and len(df) > p.sample_size:
        from sklearn.model_selection import train_test_split

        df, _ = train_test_split(df, train_size=p.sample_size, stratify=df["label"], random_state=p.seed)
    return df.sort_values("_h", kind="stable")  # fixed order, independent of how sampling shuffled


def check_class_sizes(counts: pd.Series, labels: list[str], p: DataParams) -> None:
    """Raise DataError naming the classes with fewer rows than data.min_rows_per_class (at least 3: one per split)."""
    need = max(p.min_rows_per_class, 3)
    small = {lab: int(counts.get(lab, 0)) for lab in labels if counts.get(lab, 0) < need}
    if small:
        raise DataError(
            f"data.min_rows_per_class: too few rows for a train/validation/test split in classes {small} "
            f"(need at least {need} each after cleaning)"
        )
