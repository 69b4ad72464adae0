"""The finetune stage's report: the final model's test scores, the run's facts, the TrainReport they make.
Pure assembly from the Trainer's state; kit.finetune.train writes it (main process) and returns it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.core.params import Params
from kit.core.reports import TrainReport
from kit.finetune.checkpoint import CHECKPOINT_PREFIX
from kit.finetune.model import base_model_name
from kit.finetune.splits import encode

if TYPE_CHECKING:
    from transformers import Trainer

__all__ = ["test_scores", "run_facts", "build_report"]


def test_scores(
    trainer: Trainer, tokenizer: Any, max_length: int, test: pd.DataFrame, labels: list[str]
) -> tuple[dict[str, Any], float]:
    """classification_metrics of the final model on the whole test split, and the seconds it took."""
    from kit.core.metrics import classification_metrics

    t0 = time.perf_counter()
    pred = trainer.predict(encode(test, tokenizer, max_length, sort_by_length=True), metric_key_prefix="test")
    seconds = time.perf_counter() - t0
    return classification_metrics(pred.label_ids, np.asarray(pred.predictions).argmax(-1), labels), seconds


def run_facts(
    trainer: Trainer,
    out: Any,
    params: Params,
    *,
    resume: Path | None,
    fingerprint: str,
    world: int,
    train_s: float,
    test_s: float,
    test_rows: int,
) -> dict[str, Any]:
    """The report's `train` section: steps, early stop, best checkpoint, resume, speed, processes, fingerprint."""
    import torch

    state = trainer.state
    # Median seconds per checkpoint save (None: none written); the cost stage prices spot checkpointing with it.
    saves = getattr(trainer, "kit_save_s", [])
    return {
        "base_model": base_model_name(params.model),
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": round(float(state.epoch or 0), 4),
        "stopped_early": state.global_step < state.max_steps,
        "best_step": state.best_global_step,
        "best_val_macro_f1": state.best_metric,
        "val_evaluations": sum("eval_macro_f1" in h for h in state.log_history),
        "resumed_from_step": int(resume.name[len(CHECKPOINT_PREFIX) :]) if resume is not None else None,
        "train_time_s": round(train_s, 2),
        "checkpoint_write_s": round(statistics.median(saves), 3) if saves else None,
        "train_samples_per_s": round(float(out.metrics.get("train_samples_per_second", 0.0)), 2),
        "test_time_s": round(test_s, 2),
        "test_samples_per_s": round(test_rows / test_s, 2),
        "processes": world,
        "threads_per_process": torch.get_num_threads(),
        "fingerprint": fingerprint,
    }


def build_report(
    params: Params,
    labels: list[str],
    rows: dict[str, pd.DataFrame],
    n_available: int,
    scores: dict[str, Any],
    facts: dict[str, Any],
    outputs: dict[str, str],
) -> TrainReport:
    """The stage's report before the baseline (which only the main process fits)."""
    counts = rows["train"]["label_id"].value_counts().sort_index()
    min_f1 = params.finetune.min_macro_f1
    return TrainReport(
        labels=labels,
        data={
            "train_rows": len(rows["train"]),
            "train_rows_available": n_available,
            "validation_rows": len(rows["validation"]),
            "test_rows": len(rows["test"]),
            "train_class_counts": {labels[i]: int(n) for i, n in counts.items()},
        },
        model={k: v for k, v in scores.items() if k != "confusion"},
        train=facts,
        gate={"min_macro_f1": min_f1, "passed": scores["macro_f1"] >= min_f1},
        outputs=outputs,
        confusion={"fine-tuned": scores["confusion"]},
    )
