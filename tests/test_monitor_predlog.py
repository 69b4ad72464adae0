"""The prediction log (written by kit.serve, read by kit.monitor): text features against the served tokenizer, the off-request-path writer
(every record exactly once across rotated files, drops counted when full), and the reader's handling of bad input."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from kit.core.errors import ModelDirError
from kit.monitor.features import MonitorError
from kit.monitor.predlog_read import join_delayed_labels, read_delayed_labels, read_prediction_log
from kit.monitor.textfeatures import features_frame
from kit.serve.predlog import LogSettings, PredictionLogWriter, PredictionRecord, make_record
from kit.serve.textfeatures import load_feature_tokenizer, text_features, text_hash
from tests.fixtures_serve import embedded_model_dir


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    # The tiny serving dir's tokenizer.json is this file (fixtures_serve copies it); the ONNX export is not needed.
    d = tmp_path_factory.mktemp("serving")
    shutil.copy(embedded_model_dir() / "tokenizer.json", d / "tokenizer.json")
    return load_feature_tokenizer(d)


def record(i: int, text: str | None = None) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r{i}", time="2026-12-01T00:00:00.000+00:00", text_hash=f"h{i}", length_chars=10,
        length_tokens=3, unk_rate=0.0, subword_rate=0.5, label="positive", confidence=0.9, latency_ms=1.5,
        model_version="v1", text=text,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ text features
def test_features_on_known_texts(tok):
    unknown, plain, split = text_features(tok, ["𓀀 𓀁 𓀂", "the cat sat", "unbelievably tokenization"])
    assert (unknown.unk_rate, unknown.length_tokens, unknown.length_chars) == (1.0, 3, 5)
    assert plain.unk_rate == 0.0 and plain.subword_rate == 0.0 and plain.length_tokens == 3
    assert split.subword_rate == 1.0  # both words split into several pieces
    half = text_features(tok, ["the tokenization"])[0]
    assert half.subword_rate == 0.5 and half.unk_rate == 0.0


def test_features_frame_has_the_drift_features_and_no_raw_text(tok):
    texts = ["I love this", "", "worst service ever"]
    frame = features_frame(tok, texts, labels=["positive", "neutral", "negative"], confidences=[0.9, 0.4, 0.8])
    assert {"length_chars", "length_tokens", "unk_rate", "subword_rate", "label", "confidence"} <= set(frame.columns)
    assert "text" not in frame.columns and frame.loc[1, "length_tokens"] == 0 and frame.loc[1, "unk_rate"] == 0.0
    assert frame["text_hash"].tolist() == [text_hash(t) for t in texts]
    assert text_hash("I love this") != text_hash("I love this!") and len(frame.loc[0, "text_hash"]) == 16
    with pytest.raises(MonitorError, match="2 labels for 3 texts"):
        features_frame(tok, texts, labels=["a", "b"])


def test_missing_tokenizer_is_named(tmp_path):
    with pytest.raises(ModelDirError, match=f"{tmp_path}/tokenizer.json"):
        load_feature_tokenizer(tmp_path)


# ------------------------------------------------------------------------------------------------------ writer
def test_concurrent_log_writes_every_record_once_across_rotated_files(tmp_path):
    settings = LogSettings(directory=tmp_path, max_records=97, queue_size=100_000, batch_size=50)
    threads, per_thread = 8, 500
    with PredictionLogWriter(settings) as writer:

        def worker(t: int) -> None:
            for j in range(0, per_thread, 5):
                writer.log([record(t * per_thread + j + k, text="secret") for k in range(5)])

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    assert writer.dropped == 0 and writer.written == threads * per_thread
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) == -(-threads * per_thread // 97) and files == sorted(writer.files)
    assert not list(tmp_path.glob(".*"))  # no file left open after close
    read = read_prediction_log(tmp_path)
    assert sorted(read.frame["request_id"]) == sorted(f"r{i}" for i in range(threads * per_thread))
    assert read.corrupt == 0 and read.frame["text"].isna().all()  # raw text kept only when log_text is on
    assert str(read.frame["time"].dt.tz) == "UTC"


def test_raw_text_only_when_allowed(tmp_path, tok):
    feats = text_features(tok, ["hello world"])[0]
    rec = make_record(feats, "a1", "positive", confidence=0.7, latency_ms=2.0, model_version="v1", text="hello world")
    with PredictionLogWriter(LogSettings(directory=tmp_path, log_text=True)) as writer:
        writer.log([rec])
    line = json.loads(next(tmp_path.glob("*.jsonl")).read_text())
    assert line["text"] == "hello world" and line["text_hash"] == text_hash("hello world")


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    writer = PredictionLogWriter(LogSettings(directory=tmp_path, queue_size=10))  # not started: nothing drains
    assert writer.log([record(i) for i in range(25)]) == 10
    assert writer.dropped == 15 and writer.stats()["queued"] == 10
    writer.start()
    writer.close()
    assert writer.written == 10 and writer.log([record(99)]) == 0 and writer.dropped == 16  # closed: refused


# ------------------------------------------------------------------------------------------------------ reader
def test_corrupt_lines_are_skipped_and_counted(tmp_path):
    good = [json.dumps(_row(i)) for i in range(3)]
    bad = ['{"request_id": "x"', "[1, 2]", json.dumps({**_row(9), "confidence": "high"})]
    bad.append(json.dumps({**_row(8), "time": "yesterday"}))
    (tmp_path / "predictions-a.jsonl").write_text("\n".join([good[0], bad[0], good[1], bad[1], "", bad[2]]) + "\n")
    (tmp_path / "predictions-b.jsonl").write_text(good[2] + "\n" + bad[3] + "\n\x00\xff garbage")
    read = read_prediction_log(tmp_path)
    assert sorted(read.frame["request_id"]) == ["r0", "r1", "r2"]
    assert read.corrupt == 5 and read.corrupt_examples[0].startswith("predictions-a.jsonl:2:")


def _row(i: int) -> dict:
    r = record(i)
    return {name: getattr(r, name) for name in r.__dataclass_fields__}


def test_missing_or_empty_log_is_a_clear_error(tmp_path):
    with pytest.raises(MonitorError, match=f"{tmp_path / 'nowhere'}: prediction log not found"):
        read_prediction_log(tmp_path / "nowhere")
    with pytest.raises(MonitorError, match="no prediction log files"):
        read_prediction_log(tmp_path)
    (tmp_path / "predictions-a.jsonl").write_text("")
    with pytest.raises(MonitorError, match="prediction log is empty"):
        read_prediction_log(tmp_path)
    (tmp_path / "predictions-a.jsonl").write_text("not json\n")
    with pytest.raises(MonitorError, match=r"empty.*1 corrupt line"):
        read_prediction_log(tmp_path / "predictions-a.jsonl")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_delayed_labels_join_by_request_id(tmp_path, fmt):
    log = pd.DataFrame([_row(i) for i in range(5)])
    rows = [("r1", "negative"), ("r3", "neutral"), ("r3", "positive"), ("zz", "neutral")]
    path = tmp_path / f"labels.{fmt}"
    if fmt == "csv":
        path.write_text("request_id,label\n" + "".join(f"{r},{lab}\n" for r, lab in rows) + ",neutral\n")
    else:
        lines = [json.dumps({"request_id": r, "label": lab}) for r, lab in rows] + ["{broken"]
        path.write_text("\n".join(lines) + "\n")
    joined, stats = join_delayed_labels(log, path)
    assert (stats.labels, stats.matched, stats.unmatched, stats.corrupt) == (3, 2, 1, 1)
    labels = dict(zip(joined["request_id"], joined["true_label"], strict=True))
    assert labels["r1"] == "negative" and labels["r3"] == "positive" and pd.isna(labels["r0"])  # last label wins
    assert len(joined) == len(log)


def test_delayed_label_file_errors(tmp_path):
    with pytest.raises(MonitorError, match="delayed-label file not found"):
        read_delayed_labels(tmp_path / "none.csv")
    (tmp_path / "l.csv").write_text("id,y\n1,2\n")
    with pytest.raises(MonitorError, match="need columns request_id,label"):
        read_delayed_labels(tmp_path / "l.csv")


def test_writer_closes_files_by_age_so_readers_see_recent_records(tmp_path):
    writer = PredictionLogWriter(LogSettings(directory=tmp_path, max_age_s=0.1, flush_interval_s=0.02)).start()
    try:
        writer.log([record(i) for i in range(3)])
        deadline = time.monotonic() + 5
        while not writer.files and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(read_prediction_log(tmp_path).frame) == 3  # closed while the writer still runs
    finally:
        writer.close()


def test_close_counts_records_no_thread_will_write(tmp_path):
    writer = PredictionLogWriter(LogSettings(directory=tmp_path))
    writer.log([record(i) for i in range(4)])
    writer.close()  # never started
    assert writer.dropped == 4 and writer.written == 0


def test_writer_rotates_by_bytes(tmp_path: Path):
    with PredictionLogWriter(LogSettings(directory=tmp_path, max_bytes=1024)) as writer:
        writer.log([record(i) for i in range(40)])
    sizes = [p.stat().st_size for p in writer.files]
    assert len(sizes) > 3 and all(s < 1024 + 400 for s in sizes)
    assert len(read_prediction_log(tmp_path).frame) == 40


def test_a_fastapi_app_owns_the_writer_through_its_lifespan(tmp_path, tok):
    import asyncio
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.predlog = PredictionLogWriter(LogSettings(directory=tmp_path)).start()
        yield
        await asyncio.to_thread(app.state.predlog.close)

    app = FastAPI(lifespan=lifespan)

    @app.post("/predict")
    def predict(body: dict) -> dict:
        feats = text_features(tok, [body["text"]])[0]
        rec = make_record(feats, body["id"], "neutral", confidence=0.5, latency_ms=1.0, model_version="v1")
        app.state.predlog.log([rec])
        return {"label": "neutral"}

    with TestClient(app) as client:
        for i in range(20):
            assert client.post("/predict", json={"id": f"q{i}", "text": f"text number {i}"}).status_code == 200
    frame = read_prediction_log(tmp_path).frame  # closed by the lifespan's shutdown
    assert sorted(frame["request_id"]) == sorted(f"q{i}" for i in range(20))
    assert frame.set_index("request_id").loc["q3", "text_hash"] == text_hash("text number 3")
