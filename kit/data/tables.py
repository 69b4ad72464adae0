"""Data stage table I/O: read a Parquet dataset directory or a Delta Lake table (at a pinned version) in chunks,
and write the finished splits as a split-partitioned Parquet dataset or a new version of a Delta table."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from kit.core.errors import DataError
from kit.core.params import DataParams

__all__ = ["source_version", "read_table_chunks", "write_split_table"]


def _table_dir(p: DataParams, root: Path) -> Path:
    path = root / str(p.path)
    if not path.is_dir():
        raise DataError(f"data.path: {p.source} directory not found: {path}")
    return path


def source_version(p: DataParams, root: Path) -> int | None:
    """The Delta version this run reads: data.delta_version, checked to exist, or the latest one (None for other
    sources). Resolved once, so every pass over the input reads the same snapshot.

    Raises:
        DataError: the path is not a Delta table, or the table has no such version.
    """
    if p.source != "delta":
        return None
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    path = _table_dir(p, root)
    try:
        latest = DeltaTable(str(path)).version()
    except TableNotFoundError:
        raise DataError(f"data.path: not a Delta table (no _delta_log): {path}") from None
    if p.delta_version is None:
        return latest
    try:
        DeltaTable(str(path), version=p.delta_version)
    except DeltaError as exc:
        raise DataError(
            f"data.delta_version: version {p.delta_version} of {path} cannot be read (latest is {latest}): {exc}"
        ) from None
    return p.delta_version


def _dataset(p: DataParams, root: Path, version: int | None) -> pads.Dataset:
    path = _table_dir(p, root)
    if p.source == "delta":
        from deltalake import DeltaTable

        return DeltaTable(str(path), version=version).to_pyarrow_dataset()
    return pads.dataset(path, format="parquet", partitioning="hive")


def read_table_chunks(p: DataParams, root: Path, version: int | None) -> Iterator[pd.DataFrame]:
    """Yield raw chunks (columns `text`, `label`, as read) of a parquet_dataset or delta source.

    Args:
        p: the data params (path, columns, chunk_rows).
        root: project root that data.path is relative to.
        version: the Delta version from source_version (ignored for parquet_dataset).
    """
    ds = _dataset(p, root, version)
    cols = [p.text_column, p.label_column]
    for key, col in zip(("text_column", "label_column"), cols, strict=True):
        if col not in ds.schema.names:
            raise DataError(f"data.{key}: column {col!r} not in {p.path} (columns: {', '.join(ds.schema.names)})")
    # use_threads=False keeps file order, so input row numbers (in error messages, first-kept duplicates) are stable.
    for batch in ds.to_batches(columns=cols, batch_size=p.chunk_rows, use_threads=False):
        if batch.num_rows:
            yield batch.to_pandas()[cols].set_axis(["text", "label"], axis=1).astype(object)


def _split_batches(files: dict[str, Path]) -> pa.RecordBatchReader:
    """Stream the split files, one row group at a time, with a `split` column added."""
    schema = pq.read_schema(next(iter(files.values()))).append(pa.field("split", pa.string()))

    def batches() -> Iterator[pa.RecordBatch]:
        for split, path in files.items():
            for batch in pq.ParquetFile(path).iter_batches():
                yield pa.RecordBatch.from_arrays(
                    [*batch.columns, pa.array([split] * batch.num_rows, pa.string())], schema=schema
                )

    return pa.RecordBatchReader.from_batches(schema, batches())


def write_split_table(p: DataParams, out_dir: Path, files: dict[str, Path]) -> tuple[Path, int | None]:
    """Write the split files as data.format under out_dir/data.table_dir, partitioned by `split`.

    Args:
        p: the data params (format, table_dir).
        out_dir: the data stage's output directory.
        files: split name -> its finished Parquet file.

    Returns:
        The table directory and, for delta, the table version this run wrote (None for parquet_dataset).
    """
    target = out_dir / p.table_dir
    if p.format == "delta":
        from deltalake import DeltaTable, write_deltalake

        # Overwrite makes a new version; the older ones stay readable by version number until vacuumed.
        write_deltalake(str(target), _split_batches(files), mode="overwrite", partition_by=["split"])
        return target, DeltaTable(str(target)).version()
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pads.write_dataset(_split_batches(files), tmp, format="parquet", partitioning=["split"], partitioning_flavor="hive")
    # Written aside and renamed into place, so a failed run never leaves a half-written dataset behind.
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target, None
