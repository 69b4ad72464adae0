"""A window of the prediction log (kit.monitor.window): features, decoded embeddings and the one model version out
of log rows, the latest window by rows or age, and the judged signals; every bad input is a MonitorError naming it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from kit.monitor.features import EMBEDDING_FEATURE, MonitorError
from kit.monitor.predlog_read import read_prediction_log
from kit.monitor.verdict import DRIFT, NO_DRIFT, NOT_ENOUGH_DATA
from kit.monitor.window import judge_window, latest_window, log_window
from tests.fixtures_monitor import (
    EMB_DIM,
    FEATS,
    T0,
    WINDOW,
    embeddings,
    encode,
    features,
    records,
    small_reference,
    write_log,
)


@pytest.fixture(scope="module")
def reference():
    return small_reference()


@pytest.fixture(scope="module")
def emb_reference():
    return small_reference(with_embeddings=True)


def log_frame(n: int = WINDOW, *, seed: int = 8, version: str = "v1", emb=None, **kw) -> pd.DataFrame:
    """Log rows as read_prediction_log returns them (`time` parsed as UTC)."""
    frame = pd.DataFrame(records(features(n, seed=seed, **kw), version=version, emb=emb))
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame


# ----------------------------------------------------------------------------------------------------- log_window
def test_log_window_splits_features_embeddings_and_version(emb_reference):
    emb = embeddings(WINDOW, seed=3)
    frame = log_frame(emb=emb).set_index(pd.RangeIndex(100, 100 + WINDOW))
    window, got, version = log_window(frame, emb_reference)
    assert list(window.columns) == [f.name for f in FEATS] and window.index.equals(frame.index)
    assert version == "v1" and got is not None and got.shape == (WINDOW, EMB_DIM) and got.dtype == np.float32
    np.testing.assert_array_equal(got, emb)  # float16 values survive the base64 round trip exactly


def test_log_window_without_embeddings_is_none(reference, emb_reference):
    emb = embeddings(WINDOW, seed=3)
    assert log_window(log_frame(emb=emb), reference)[1] is None  # the reference monitors no embeddings
    assert log_window(log_frame(), emb_reference)[1] is None  # the log has no embedding column
    frame = log_frame().assign(embedding=None)
    assert log_window(frame, emb_reference)[1] is None  # or only nulls in it (embedding logging off)


def test_log_window_refuses_bad_input(emb_reference):
    with pytest.raises(MonitorError, match="window: no predictions"):
        log_window(log_frame().iloc[:0], emb_reference)
    mixed = pd.concat([log_frame(10, version="v1"), log_frame(5, version="v2")], ignore_index=True)
    with pytest.raises(MonitorError, match=r"2 model versions: 'v1' \(10 rows\), 'v2' \(5 rows\)"):
        log_window(mixed, emb_reference)
    with pytest.raises(MonitorError, match="missing feature column.*confidence"):
        log_window(log_frame().drop(columns="confidence"), emb_reference)
    emb = embeddings(WINDOW, seed=3)
    some = log_frame(emb=emb)
    some.loc[[4, 9], "embedding"] = None
    with pytest.raises(MonitorError, match=r"2 of 120 row\(s\) have no embedding \(first: 'r00004'\)"):
        log_window(some, emb_reference, what="window 7")
    wrong_dim = log_frame(emb=emb)
    wrong_dim.loc[3, "embedding"] = encode(np.zeros(EMB_DIM + 2))
    with pytest.raises(MonitorError, match=r"row 3 \('r00003'\): embedding has 10 dims, the reference 8"):
        log_window(wrong_dim, emb_reference)
    garbled = log_frame(emb=emb)
    garbled.loc[0, "embedding"] = "not base64!"
    with pytest.raises(MonitorError, match=r"row 0 \('r00000'\): embedding is not base64 float16"):
        log_window(garbled, emb_reference)


# --------------------------------------------------------------------------------------------------- judge_window
def test_judge_window_calm_drifted_and_too_small(emb_reference):
    calm = judge_window(emb_reference, log_frame(emb=embeddings(WINDOW, seed=3)), min_rows=50)
    assert calm.verdict.status == NO_DRIFT and EMBEDDING_FEATURE in calm.verdict.features
    shifted = log_frame(emb=embeddings(WINDOW, seed=4, shift=0.8))
    drift = judge_window(emb_reference, shifted, min_rows=50)
    assert drift.verdict.status == DRIFT and EMBEDDING_FEATURE in drift.verdict.drifted_features
    longer = judge_window(emb_reference, log_frame(length_scale=2.5), min_rows=50)
    assert longer.verdict.status == DRIFT and "length_chars" in longer.verdict.drifted_features
    assert EMBEDDING_FEATURE not in longer.verdict.features  # no embeddings logged: that feature is not tested
    # Too few rows: "not enough data" even for a window that is plainly shifted.
    tiny = judge_window(emb_reference, log_frame(20, length_scale=3.0), min_rows=50)
    assert tiny.verdict.status == NOT_ENOUGH_DATA and tiny.verdict.rows == 20 and not tiny.verdict.features


def test_judge_window_refuses_another_model_version_and_uses_delayed_labels(reference):
    with pytest.raises(MonitorError, match=r"made for model version 'v1', the window was served by 'v2'"):
        judge_window(reference, log_frame(version="v2"), min_rows=50)
    frame = log_frame().set_index(pd.RangeIndex(500, 500 + WINDOW))
    truth = frame["label"].where(np.arange(WINDOW) % 2 == 0)  # half the labels arrived, all agreeing
    signals = judge_window(reference, frame, min_rows=50, true_labels=truth)
    assert signals.labelled_rows == WINDOW // 2 and signals.macro_f1 == pytest.approx(1.0)
    assert set(signals.class_shares) == {"negative", "neutral", "positive"}


# -------------------------------------------------------------------------------------------------- latest_window
def test_latest_window_by_rows_and_by_age():
    frame = log_frame(100).sample(frac=1.0, random_state=0)  # unordered, as files from several writers can be
    last = latest_window(frame, rows=10)
    assert list(last["request_id"]) == [f"r{i:05d}" for i in range(90, 100)]
    now = T0 + timedelta(seconds=99)
    recent = latest_window(frame, since_s=30, now=now)
    assert list(recent["request_id"]) == [f"r{i:05d}" for i in range(69, 100)]
    assert latest_window(frame, since_s=30, now=now.replace(tzinfo=None)).equals(recent)  # naive now: UTC
    assert latest_window(frame, since_s=30, now=now + timedelta(hours=1)).empty
    assert len(latest_window(frame, rows=1000)) == 100
    with pytest.raises(MonitorError, match="exactly one of rows or since_s"):
        latest_window(frame, rows=5, since_s=60)
    with pytest.raises(MonitorError, match="rows must be at least 1"):
        latest_window(frame, rows=0)


def test_a_hand_written_log_read_back_is_a_window(tmp_path, reference):
    write_log(tmp_path, records(features(WINDOW, seed=8)), extra_lines=("{not json",))
    log = read_prediction_log(tmp_path)
    assert log.corrupt == 1
    signals = judge_window(reference, latest_window(log.frame, rows=100), min_rows=50)
    assert signals.verdict.status == NO_DRIFT and signals.verdict.rows == 100
