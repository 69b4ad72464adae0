"""Figures and tables of the finetune stage's report: training curves, confusion matrices, summary and per-class tables.
Pure functions of the TrainReport (its `history` is the Trainer's log); matplotlib is imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.core.reports import TrainReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_training_curves", "plot_confusion", "summary_table", "per_class_table"]


def plot_training_curves(history: list[dict[str, Any]]) -> Figure:
    """Training/validation loss and validation macro-F1 over optimizer steps (from Trainer.state.log_history)."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [h for h in history if "eval_macro_f1" in h]
    if train:
        ax1.plot(*zip(*train), label="train loss")
    if evals:
        ax1.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="validation loss")
        ax2.plot([h["step"] for h in evals], [h["eval_macro_f1"] for h in evals], "o-", color="C2")
        best = max(evals, key=lambda h: h["eval_macro_f1"])
        ax2.axvline(best["step"], color="grey", ls=":", label=f"best (step {best['step']})")
        ax2.legend(loc="lower right")
    ax1.set(xlabel="optimizer step", ylabel="cross-entropy", title="Loss")
    ax1.legend()
    ax2.set(xlabel="optimizer step", ylabel="macro-F1", title="Validation macro-F1")
    fig.tight_layout()
    return fig


def plot_confusion(confusions: dict[str, list[list[int]]], labels: list[str]) -> Figure:
    """One confusion matrix per model (rows: true label, columns: predicted), counts and row percentages."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(confusions), figsize=(4.4 * len(confusions), 3.9), squeeze=False)
    for ax, (name, cm) in zip(axes[0], confusions.items()):
        cm = np.asarray(cm)
        rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]}\n{rows[i, j]:.0%}",
                    ha="center",
                    va="center",
                    color="white" if rows[i, j] > 0.5 else "black",
                    fontsize=9,
                )
        ax.set(
            xticks=range(len(labels)),
            yticks=range(len(labels)),
            xticklabels=labels,
            yticklabels=labels,
            xlabel="predicted",
            ylabel="true",
            title=name,
        )
    fig.tight_layout()
    return fig


def summary_table(report: TrainReport) -> pd.DataFrame:
    """Test accuracy and macro-F1 of the fine-tuned model beside the baseline, plus speed."""
    tr = report.train
    return pd.DataFrame(
        [
            {
                "model": "fine-tuned",
                "test accuracy": report.model.accuracy,
                "test macro-F1": report.model.macro_f1,
                "train time (s)": tr.train_time_s,
                "train samples/s": tr.train_samples_per_s,
            },
            {
                "model": "TF-IDF + LR baseline",
                "test accuracy": report.baseline.accuracy,
                "test macro-F1": report.baseline.macro_f1,
                "train time (s)": report.baseline.fit_time_s,
                "train samples/s": None,
            },
        ]
    ).set_index("model")


def per_class_table(report: TrainReport) -> pd.DataFrame:
    """Per-class precision / recall / F1 of both models on the test split."""
    rows = []
    for name in report.labels:
        m, b = report.model.per_class[name], report.baseline.per_class[name]
        rows.append(
            {
                "class": name,
                "support": m.support,
                "precision": m.precision,
                "recall": m.recall,
                "F1": m.f1,
                "baseline precision": b.precision,
                "baseline recall": b.recall,
                "baseline F1": b.f1,
            }
        )
    return pd.DataFrame(rows).set_index("class")
