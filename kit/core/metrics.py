"""Classification metrics every stage reports the same way: accuracy, macro-F1, per-class scores, confusion.
scikit-learn is imported inside the functions, so importing kit.core stays light."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "accuracy_macro_f1"]


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true: true label ids.
        y_pred: predicted label ids.
        labels: label names in id order (every id counts in the macro average, present or not).

    Returns:
        {"accuracy", "macro_f1", "per_class": {label: {...}}, "confusion": [[count]] (rows: true, cols: predicted)}.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    prec, rec, f1, support = precision_recall_fscore_support(true, pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(f1_score(true, pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, prec, rec, f1, support, strict=True)
        },
        "confusion": confusion_matrix(true, pred, labels=ids).tolist(),
    }


def accuracy_macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """{"macro_f1", "accuracy"}: the cheap pair a training loop tracks on each validation pass.

    The macro average runs over the classes present in y_true or y_pred (scikit-learn's default), which is what
    selected the best checkpoint so far; changing it could change which checkpoint wins.
    """
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }
