"""Figures of the data stage's report: class share per split and the text length distribution.
Pure functions of a DataReport (with its length histograms); matplotlib is imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.core.io import save_figure
from kit.core.reports import DataReport
from kit.data.dataset import SPLITS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PLOTS", "plot_class_balance", "plot_text_length", "save_plots"]

# File name of each figure under the plots dir (dvc.yaml tracks them as plots).
PLOTS = {"class_balance": "data_class_balance.png", "text_length": "data_text_length.png"}


def plot_class_balance(report: DataReport) -> Figure:
    """Bars of each label's share of each split (equal shares across splits: the split kept the balance)."""
    import matplotlib.pyplot as plt

    labels = report.labels
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(SPLITS)
    for i, s in enumerate(SPLITS):
        counts = [report.class_balance[s][lab] for lab in labels]
        total = max(sum(counts), 1)
        ax.bar(np.arange(len(labels)) + i * width, [c / total for c in counts], width, label=f"{s} ({total:,})")
    ax.set_xticks(np.arange(len(labels)) + width * (len(SPLITS) - 1) / 2, labels)
    ax.set_ylabel("share of split")
    ax.set_title("Class balance per split")
    ax.legend()
    return fig


def plot_text_length(report: DataReport) -> Figure:
    """Share of texts per 10-character bin, one line per split (needs report.length_histogram)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in SPLITS:
        hist = np.asarray(report.length_histogram[s], dtype=float)
        upto = max(int(report.text_chars[s].max), 1) + 1
        bins = np.add.reduceat(hist[:upto], np.arange(0, upto, 10))
        ax.plot(np.arange(0, upto, 10), bins / max(hist.sum(), 1), label=s, drawstyle="steps-post")
    ax.set_xlabel("characters per text (after cleaning)")
    ax.set_ylabel("share of texts per 10-char bin")
    ax.set_title("Text length distribution")
    ax.legend()
    return fig


def save_plots(report: DataReport, plots_dir: str | Path) -> dict[str, Path]:
    """Draw both figures, save them as PNGs under plots_dir and close them.

    Returns:
        figure name (a key of PLOTS) -> PNG path.
    """
    import matplotlib.pyplot as plt

    out = {}
    for name, draw in (("class_balance", plot_class_balance), ("text_length", plot_text_length)):
        fig = draw(report)
        out[name] = save_figure(fig, Path(plots_dir) / PLOTS[name])
        plt.close(fig)
    return out
