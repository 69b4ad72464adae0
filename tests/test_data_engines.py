"""Data stage storage and engines: Delta Lake input at a pinned version (recorded in the report), Parquet dataset
and Delta copies of the splits, and the Spark engine giving the pandas engine's cleaning and split membership."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pytest

from kit.core.errors import DataError
from kit.core.params import DataParams, Params
from kit.core.reports import DataReport, read_report
from kit.data import SPLITS, build_dataset, run_data
from tests.conftest import make_texts

LABELS = ["negative", "neutral", "positive"]
# pyspark 4.3 warns that it does not yet fully support pandas 3; the engine tests below are what checks it works here.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


def params(**kw) -> DataParams:
    base = dict(out_dir="out", labels=LABELS, min_rows_per_class=5, chunk_rows=1000, split_method="hash")
    base.update(kw)
    return DataParams(**base)


def splits(root: Path, out: str = "out") -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(root / out / f"{s}.parquet") for s in SPLITS}


# ------------------------------------------------------------------------------------------------ Delta input
@pytest.fixture
def delta_two_versions(tmp_path: Path) -> tuple[Path, list, list]:
    """A Delta table whose version 0 holds 120 rows and version 1 (an append) 60 more."""
    from deltalake import write_deltalake

    rows = make_texts(60)
    first, second = rows[:120], rows[120:]
    path = tmp_path / "tweets"
    write_deltalake(str(path), pd.DataFrame(first, columns=["tweet", "label"]))
    write_deltalake(str(path), pd.DataFrame(second, columns=["tweet", "label"]), mode="append")
    return path, first, second


def test_delta_source_reads_the_pinned_version_and_records_it(delta_two_versions, tmp_path):
    path, first, second = delta_two_versions
    texts = {}
    for version in (0, 1, None):
        root = tmp_path / f"v{version}"
        p = params(source="delta", path=str(path), text_column="tweet", delta_version=version)
        report = run_data(Params(data=p), root)
        texts[version] = set(pd.concat(splits(root).values()).text)
        on_disk = read_report(root / "reports/data.json", DataReport)
        assert on_disk.storage is not None and on_disk.storage.source_version == (1 if version is None else version)
        assert on_disk.rows_read == report.rows_read == (120 if version == 0 else 180)
    assert texts[0] == {t for t, _ in first}
    assert texts[1] == texts[None] == {t for t, _ in first + second}


def test_delta_source_errors_name_the_key(delta_two_versions, tmp_path):
    path, _, _ = delta_two_versions
    with pytest.raises(DataError, match=r"data.delta_version: version 7 of .* cannot be read \(latest is 1\)"):
        build_dataset(params(source="delta", path=str(path), text_column="tweet", delta_version=7), tmp_path)
    with pytest.raises(DataError, match="data.path: not a Delta table"):
        build_dataset(params(source="delta", path=str(tmp_path)), tmp_path)
    with pytest.raises(DataError, match="data.text_column: column 'text' not in"):
        build_dataset(params(source="delta", path=str(path)), tmp_path)


def test_default_report_has_no_storage_section(tiny_csv, tmp_path):
    run_data(Params(data=params(source="csv", path=str(tiny_csv))), tmp_path)
    assert "storage" not in (tmp_path / "reports/data.json").read_text()


# --------------------------------------------------------------------------------------------- split copies
def test_parquet_dataset_copy_round_trips_as_a_source(tiny_csv, tmp_path):
    report = build_dataset(params(source="csv", path=str(tiny_csv), format="parquet_dataset"), tmp_path)
    assert report.storage is not None and report.storage.table_path == "out/splits"
    files = splits(tmp_path)
    assert sorted(p.name for p in (tmp_path / "out/splits").iterdir()) == [f"split={s}" for s in sorted(SPLITS)]
    table = pads.dataset(tmp_path / "out/splits", format="parquet", partitioning="hive").to_table().to_pandas()
    for s in SPLITS:
        part = table[table["split"] == s].drop(columns="split").reset_index(drop=True)
        pd.testing.assert_frame_equal(part, files[s], check_dtype=False, check_categorical=False)
    # The copy read back as a parquet_dataset source yields the same rows in the same splits (hash split).
    build_dataset(params(source="parquet_dataset", path="out/splits", out_dir="again"), tmp_path)
    again = splits(tmp_path, "again")
    assert all(set(again[s].text) == set(files[s].text) for s in SPLITS)


def test_delta_copy_adds_a_version_per_run_and_keeps_the_old_one(tiny_csv, tmp_path):
    from deltalake import DeltaTable

    first = build_dataset(params(source="csv", path=str(tiny_csv), format="delta"), tmp_path)
    assert first.storage is not None and first.storage.table_version == 0
    rows0 = first.rows["total"]
    small = tmp_path / "small.csv"
    pd.read_csv(tiny_csv).iloc[:90].to_csv(small, index=False)
    second = build_dataset(params(source="csv", path=str(small), format="delta"), tmp_path)
    assert second.storage is not None and second.storage.table_version == 1
    table = tmp_path / "out/splits"
    assert DeltaTable(str(table), version=0).to_pyarrow_table().num_rows == rows0
    latest = DeltaTable(str(table)).to_pandas()
    assert len(latest) == second.rows["total"] == 90
    assert latest.groupby("split").size().to_dict() == {s: second.rows[s] for s in SPLITS if second.rows[s]}


# ------------------------------------------------------------------------------------------------ Spark engine
@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: the Spark engine needs a JRE 17+ (.ci/run installs default-jre-headless)")
    from kit.data.spark import spark_session

    session = spark_session("local[2]")
    yield session
    session.stop()


def _digests(df: pd.DataFrame) -> set[str]:
    return {hashlib.sha256(t.encode()).hexdigest() for t in df.text}


def test_spark_engine_matches_pandas_on_the_full_corpus(spark, tmp_path):
    base = dict(source="embedded", label_column="sentiment", min_rows_per_class=10, chunk_rows=100_000)
    reports, frames = {}, {}
    for engine in ("pandas", "spark"):
        reports[engine] = build_dataset(params(**base, engine=engine, spark_master="local[2]"), tmp_path / engine)
        frames[engine] = splits(tmp_path / engine)
    assert reports["pandas"].rows_read > 38_000 and reports["pandas"].duplicates_dropped > 900
    for s in SPLITS:  # the same rows in each split, cleaned alike and in the same (input) order
        assert _digests(frames["spark"][s]) == _digests(frames["pandas"][s])
        pd.testing.assert_frame_equal(frames["spark"][s], frames["pandas"][s])
    pandas_report = reports["pandas"].model_dump(exclude={"storage"})
    assert reports["spark"].model_dump(exclude={"storage"}) == pandas_report
    assert reports["spark"].storage is not None and reports["spark"].storage.engine == "spark"


def test_spark_cleaning_matches_pandas_on_unicode_space_duplicates_and_short_texts(spark, tmp_path):
    tricky = [
        ("\u00a0 nbsp\u2003em\u00a0 ", "positive"),  # Unicode spaces: pandas' \s matches them, Java's \s does not
        ("\x0bvtab\x0b inside\x0b", "neutral"),
        ("line\u2028sep \r\n tab\t\tend", "negative"),
        ("hello   world", "negative"),
        ("hello world", "positive"),  # duplicate after cleaning: the first input row (negative) is kept
        ("ab", "neutral"),  # too short for min_chars 3
        (" padded label ", " positive\u00a0"),
    ]
    path = tmp_path / "in.csv"
    pd.DataFrame(make_texts(20) + tricky, columns=["text", "label"]).to_csv(path, index=False)
    reports = {}
    for engine in ("pandas", "spark"):
        p = params(source="csv", path=str(path), min_chars=3, engine=engine, spark_master="local[2]", out_dir=engine)
        reports[engine] = build_dataset(p, tmp_path)
    for s in SPLITS:
        pd.testing.assert_frame_equal(splits(tmp_path, "spark")[s], splits(tmp_path, "pandas")[s])
    assert reports["spark"].duplicates_dropped == reports["pandas"].duplicates_dropped == 1
    assert reports["spark"].rows_dropped_too_short == reports["pandas"].rows_dropped_too_short == 1
    kept = pd.concat(splits(tmp_path, "spark").values())
    assert kept.set_index("text").loc["hello world", "label"] == "negative"
    assert {"nbsp em", "vtab inside", "line sep tab end", "padded label"} <= set(kept.text)


def test_spark_engine_errors_name_rows_like_pandas(spark, tmp_path):
    path = tmp_path / "in.csv"
    rows = make_texts(10) + [("fine text", "happy"), ("   ", "positive"), ("more text", "sad")]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    for engine in ("pandas", "spark"):
        p = params(source="csv", path=str(path), engine=engine, spark_master="local[2]")
        with pytest.raises(DataError, match=r"data.text_column 'text': empty text in rows 32\b"):
            build_dataset(p, tmp_path)
    bad_labels = tmp_path / "labels.csv"
    pd.DataFrame(rows[:31] + rows[32:], columns=["text", "label"]).to_csv(bad_labels, index=False)
    for engine in ("pandas", "spark"):
        p = params(source="csv", path=str(bad_labels), engine=engine, spark_master="local[2]")
        with pytest.raises(DataError, match=r"unknown labels \['happy', 'sad'\] in rows 31, 32 \(data.labels allows"):
            build_dataset(p, tmp_path)


def test_spark_engine_needs_a_hash_split():
    with pytest.raises(ValueError, match="spark needs split_method hash"):
        DataParams(engine="spark", split_method="stratified")
