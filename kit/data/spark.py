"""Data stage engine `spark`: clean, validate, deduplicate and hash-split the input with Spark Column expressions.
Rows land in the same splits as the pandas engine: the split bucket is the same pandas SipHash, run in a pandas UDF."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kit.core.errors import DataError
from kit.core.params import DataParams
from kit.data.clean import DropCounts, _hash, clean_chunk
from kit.data.read import TEXT_DTYPE, read_chunks

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["spark_session", "whitespace_classes", "spark_split", "split_chunks"]

_BUCKETS = 1_000_000  # as kit.data.clean.assign_hash_split


def spark_session(master: str) -> SparkSession:
    """The active Spark session, or a new one on `master` (UI off; Python workers run this interpreter and can
    import kit, which the split UDF needs)."""
    from pyspark.sql import SparkSession

    kit_root = str(Path(__file__).resolve().parents[2])
    paths = [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
    if kit_root not in paths:  # read by the JVM when it starts Python workers
        os.environ["PYTHONPATH"] = os.pathsep.join([kit_root, *paths])
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("kit-data")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@functools.cache
def whitespace_classes() -> tuple[str, str]:
    """Java regex classes of the characters the pandas engine treats as space: those its `\\s` matches (in
    str.replace) and those str.strip removes. Derived by running clean_chunk's own calls on every code point, so
    Java's different `\\s` and trim() never decide what is cleaned (pandas' `\\s` is Unicode-aware, Java's is not)."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    chars = pd.Series([chr(c) for c in cps], dtype=TEXT_DTYPE)
    matched = (chars.str.replace(r"\s", "", regex=True).str.len() == 0).tolist()
    trimmed = (chars.str.strip().str.len() == 0).tolist()

    def char_class(mask: list[bool]) -> str:
        return "[" + "".join(f"\\x{{{c:x}}}" for c, m in zip(cps, mask, strict=True) if m) + "]"

    return char_class(matched), char_class(trimmed)


def _stage(p: DataParams, root: Path, version: int | None, path: Path) -> int:
    """Stream the raw input into one Parquet file with its 1-based input row number `_row`; returns the rows."""
    schema = pa.schema([("_row", pa.int64()), ("text", pa.string()), ("label", pa.string())])
    offset = 0
    with pq.ParquetWriter(path, schema) as writer:
        for raw in read_chunks(p, root, version):
            try:
                text = pa.array(raw["text"], pa.string(), from_pandas=True)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                clean_chunk(raw, p, offset)  # raises the pandas engine's DataError naming the non-string rows
                raise
            label = raw["label"]
            if not isinstance(label.dtype, pd.StringDtype):  # as clean_chunk: non-string labels by their str()
                label = label.map(lambda v: None if pd.isna(v) else str(v))
            rows = pa.array(range(offset + 1, offset + len(raw) + 1), pa.int64())
            writer.write_table(pa.table([rows, text, pa.array(label, pa.string(), from_pandas=True)], schema=schema))
            offset += len(raw)
    return offset


def _strip(col: Column, trim: str) -> Column:
    from pyspark.sql import functions as F

    return F.regexp_replace(col, f"\\A{trim}+|{trim}+\\z", "")


def _rows_text(rows: list[int], n: int) -> str:
    return ", ".join(map(str, rows)) + (f" and {n - len(rows)} more" if n > len(rows) else "")


def _validate(df: DataFrame, p: DataParams) -> None:
    """Raise DataError as the pandas engine would: naming the params key, column and first input rows at fault."""
    from pyspark.sql import functions as F

    text, label = F.col("text"), F.col("label")
    checks = {
        "empty": (text.isNull() | (F.length(text) == 0), f"data.text_column {p.text_column!r}: empty text"),
        "no_label": (label.isNull() | (F.length(label) == 0), f"data.label_column {p.label_column!r}: missing label"),
    }
    if p.labels is not None:
        checks["unknown"] = (~label.isin(p.labels), f"data.label_column {p.label_column!r}: unknown labels")
    counts = df.agg(*[F.sum(F.when(c, 1).otherwise(0)).alias(k) for k, (c, _) in checks.items()]).first()
    for key, (cond, what) in checks.items():
        n = int(counts[key] or 0)  # type: ignore[index]
        if n:
            bad = df.where(cond).orderBy("_row")
            rows = [r["_row"] for r in bad.select("_row").limit(5).collect()]
            if key != "unknown":
                raise DataError(f"{what} in rows {_rows_text(rows, n)}")
            seen = [r["label"] for r in bad.select("label").distinct().orderBy("label").limit(5).collect()]
            raise DataError(f"{what} {seen} in rows {_rows_text(rows, n)} (data.labels allows {p.labels})")


def _bucket(key: str) -> Column:
    """Split bucket of `text`: pandas' keyed SipHash-2-4 (kit.data.clean._hash) mod 1e6, in an Arrow pandas UDF.
    Spark has no SipHash (its hash/xxhash64 are Murmur3/xxHash64), and changing the pandas hash would move rows."""
    from pyspark.sql.functions import col, pandas_udf

    @pandas_udf("long")  # type: ignore[call-overload]
    def bucket(text: pd.Series) -> pd.Series:
        return pd.Series((_hash(text, key) % _BUCKETS).astype("int64"))

    return bucket(col("text"))


def spark_split(
    p: DataParams, root: Path, version: int | None, stats: DropCounts, workdir: Path
) -> tuple[list[str], dict[str, list[Path]]]:
    """Clean, validate, drop duplicate texts (first input row kept) and hash-split the input on Spark.

    Args:
        p: the data params (engine spark: split_method hash).
        root: project root that data.path is relative to.
        version: the Delta version to read (source delta), else None.
        stats: filled with rows read, too short and duplicates.
        workdir: scratch directory for the staged input and Spark's split output (on a cluster: shared storage).

    Returns:
        The labels (data.labels, or the sorted labels found) and, per split, its Parquet files in input row order.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = spark_session(p.spark_master)
    stats.rows_read = _stage(p, root, version, workdir / "input.parquet")
    space, trim = whitespace_classes()
    raw = spark.read.parquet(str(workdir / "input.parquet"))
    df = raw.select(
        "_row",
        _strip(F.regexp_replace("text", f"{space}+", " "), trim).alias("text"),
        _strip(F.col("label"), trim).alias("label"),
    ).cache()
    _validate(df, p)
    labels = p.labels or sorted(r["label"] for r in df.select("label").distinct().collect())
    kept = df.where(F.length("text") >= p.min_chars)
    ranked = kept.withColumn("_n", F.row_number().over(Window.partitionBy("text").orderBy("_row"))).cache()
    counts = ranked.agg(F.count("*").alias("kept"), F.sum(F.when(F.col("_n") > 1, 1).otherwise(0)).alias("dups"))
    kept_n, dups = counts.first()  # type: ignore[misc]
    stats.too_short, stats.duplicates = stats.rows_read - int(kept_n), int(dups or 0)
    u = _bucket(f"split{p.seed}") / F.lit(float(_BUCKETS))
    split = (
        F.when(u < p.test_fraction, "test").when(u < p.test_fraction + p.val_fraction, "validation").otherwise("train")
    )
    unique = ranked.where(F.col("_n") == 1).select("_row", "text", "label")
    # Range partitions by input row, sorted inside by (split, row) as the partitioned writer wants: each task's file
    # per split is in input order, and file names (task order) put the files in input order too. The split (a Python
    # UDF) is added after the repartition, so the range sampling job does not run it as well.
    ranges = unique.repartitionByRange(spark.sparkContext.defaultParallelism, "_row").withColumn("split", split)
    ranges.sortWithinPartitions("split", "_row").write.partitionBy("split").parquet(str(workdir / "splits"))
    ranked.unpersist()
    df.unpersist()
    return labels, {
        s: sorted((workdir / "splits" / f"split={s}").glob("*.parquet")) for s in ("train", "validation", "test")
    }


def split_chunks(files: list[Path], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Rows (text, label) of one split's Spark output files, in input order, about chunk_rows at a time."""
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=["text", "label"]):
            yield batch.to_pandas()
