"""Fixtures for tests/test_finetune.py: a small synthetic sentiment corpus and a throwaway project around it.
The corpus is learnable by a tiny BERT in a few dozen steps (sentiment words decide the label, 8% of labels flipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kit.core.io import write_labels

__all__ = ["LABELS", "synthetic_split", "make_project", "TINY_TRAIN"]

LABELS = ["negative", "neutral", "positive"]
_WORDS = {
    0: ["bad", "awful", "hate", "terrible", "sad", "worst", "angry", "broken"],
    1: ["table", "road", "today", "paper", "window", "monday", "report", "train"],
    2: ["good", "great", "love", "excellent", "happy", "best", "nice", "amazing"],
}
_FILLER = "the a is it this my we you and of to in on was that for with as at be".split()

# Tiny model, short run: 200 training rows, batch 16, 60 steps, checkpoint every 10. The random tiny BERT
# needs a high learning rate to reach the noise ceiling (~0.95 macro-F1) within 60 steps.
TINY_TRAIN: dict[str, Any] = {
    "learning_rate": 3.0e-3,
    "warmup_ratio": 0.0,
    "max_steps": 60,
    "batch_size": 16,
    "eval_batch_size": 64,
    "max_train_rows": 200,
    "max_eval_rows": 60,
    "eval_steps": 10,
    "save_steps": 10,
    "logging_steps": 5,
    "early_stopping_patience": 0,
    "threads": 1,
    "min_macro_f1": 0.5,
    "min_gain_over_baseline": -100.0,  # the baseline gate has its own test: a toy model need not beat TF-IDF
}


def synthetic_split(n: int, seed: int, noise: float = 0.08) -> pd.DataFrame:
    """`n` rows of `text`, `label`, `label_id`; texts of 4-14 words so batches need real padding."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        y = int(rng.integers(0, 3))
        words = list(rng.choice(_FILLER, size=int(rng.integers(2, 12))))
        for _ in range(int(rng.integers(2, 4))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_WORDS[y])))
        label = int(rng.integers(0, 3)) if rng.random() < noise else y
        rows.append({"text": " ".join(words), "label": LABELS[label], "label_id": label})
    df = pd.DataFrame(rows)
    df["label_id"] = df["label_id"].astype("int64")
    return df


def make_project(root: Path, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> Path:
    """A project root (params.yaml, dvc.yaml, data/) that run_finetune or `python -m kit.finetune` can run in; returns
    `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    data = root / "data"
    data.mkdir(exist_ok=True)
    for i, (split, n) in enumerate([("train", 240), ("validation", 60), ("test", 150)]):
        synthetic_split(n, seed=100 + i).to_parquet(data / f"{split}.parquet", index=False)
    write_labels(data / "labels.json", LABELS)
    params = {"model": {"source": "tiny", "max_length": 32, **(model or {})}, "finetune": {**TINY_TRAIN, **(train or {})}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root
