"""The finetune stage (run_finetune): fine-tune a transformer classifier on the data stage's splits with the Trainer,
score it beside a TF-IDF baseline, write the model, train.json, plots and model card; torchrun-ready."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kit.core.errors import DataError, KitError, QualityGateError, TrainingInterrupted
from kit.core.io import project_root, read_labels, rel_path, save_figure, write_text
from kit.core.layout import LAYOUT
from kit.core.params import FinetuneParams, Params
from kit.core.reports import BaselineScores, TrainReport, write_report
from kit.finetune.checkpoint import checkpoints, find_resume_checkpoint, run_fingerprint
from kit.finetune.model import base_model_name, load_model, save_model_dir
from kit.finetune.report import build_report, run_facts, test_scores
from kit.finetune.splits import encode, load_splits, sample_rows
from kit.finetune.trainer import class_weights, compute_metrics, local_world, rank_and_world, trainer_classes

if TYPE_CHECKING:  # heavy imports stay inside functions so `import kit.finetune.train` is cheap
    from transformers import Trainer, TrainingArguments

__all__ = ["check_quality_gate", "run_finetune"]


def check_quality_gate(report: TrainReport, min_macro_f1: float, min_gain_points: float | None = None) -> None:
    """Raise QualityGateError when the test macro-F1 in `report` is below `min_macro_f1`, or (with the baseline in
    the report) beats the baseline's by fewer than `min_gain_points` percentage points."""
    got = report.model.macro_f1
    base = f"{report.baseline.macro_f1:.4f}" if report.baseline else "n/a"
    kept = f"the model was still written to {report.outputs['model_dir']} for inspection"
    if got < min_macro_f1:
        raise QualityGateError(
            f"quality gate failed: test macro-F1 {got:.4f} < finetune.min_macro_f1 {min_macro_f1:.4f} "
            f"(baseline {base}); {kept}"
        )
    if min_gain_points is not None and report.macro_f1_gain is not None:
        gain = 100 * report.macro_f1_gain
        if gain < min_gain_points:
            raise QualityGateError(
                f"quality gate failed: test macro-F1 {got:.4f} beats the TF-IDF baseline ({base}) by {gain:+.2f} "
                f"points < finetune.min_gain_over_baseline {min_gain_points:+.2f}; {kept}. Fine-tuning did not pay: "
                "check finetune.learning_rate, epochs and train_rows before optimizing and serving this model"
            )


def _training_arguments(t: FinetuneParams, ckpt_dir: Path, world: int) -> TrainingArguments:
    """The Trainer's arguments from the `finetune` params; `batch_size` is global, split over `world` processes."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=t.batch_size // world,
        per_device_eval_batch_size=t.eval_batch_size,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio (warmup_ratio is gone)
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.keep_checkpoints,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        seed=t.seed,
        full_determinism=t.deterministic,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives a resume
        report_to="none",  # DVCLive is added explicitly, configured for pipelines
        disable_tqdm=True,  # our own plain tqdm bar instead (the notebook widget does not render under papermill)
        use_cpu=not cuda,
        ddp_backend=("nccl" if cuda else "gloo") if world > 1 else None,
        ddp_find_unused_parameters=False,  # every weight takes part in the forward pass
        # True would multiply the loss by the process count for models that take **kwargs but ignore
        # num_items_in_batch (BERT): doubled gradients and logged losses under DDP.
        average_tokens_across_devices=False,
        dataloader_num_workers=0,
    )


def _make_trainer(
    params: Params,
    model: Any,
    tokenizer: Any,
    rows: dict[str, pd.DataFrame],
    *,
    fingerprint: str,
    ckpt_dir: Path,
    live_dir: Path,
    world: int,
) -> tuple[Trainer, Any, Any]:
    """The kit's Trainer with the stage's callbacks: (trainer, completion marker, SIGTERM stopper)."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    t, max_len = params.finetune, params.model.max_length
    padding = "max_length" if t.pad_to_max_length else "longest"
    KitTrainer, MarkComplete, StopOnSignal, Progress, Live = trainer_classes()
    marker, stopper = MarkComplete(fingerprint), StopOnSignal()
    live_params = {"model": params.model.model_dump(mode="json"), "finetune": t.model_dump(mode="json")}
    callbacks = [marker, stopper, Progress(), Live(live_dir, live_params)]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    trainer = KitTrainer(
        model=model,
        args=_training_arguments(t, ckpt_dir, world),
        train_dataset=encode(rows["train"], tokenizer, max_len),
        eval_dataset=encode(rows["validation"], tokenizer, max_len, sort_by_length=True),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, padding=padding, max_length=max_len),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        group_by_length=t.group_by_length,
        class_weights=class_weights(rows["train"]["label_id"], model.config.num_labels)
        if t.class_weight == "balanced"
        else None,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer, marker, stopper


def _train(trainer: Trainer, resume: Path | None, marker: Any, stopper: Any, ckpt_dir: Path) -> tuple[Any, float]:
    """trainer.train(), resuming `resume`; SIGTERM (spot reclaim, `kill`, Kubernetes eviction) finishes the step,
    writes a checkpoint and raises TrainingInterrupted. Returns (the Trainer's output, seconds)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: setattr(stopper, "requested", True))
    try:
        t0 = time.perf_counter()
        out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        seconds = time.perf_counter() - t0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if stopper.requested:
        step = stopper.stopped_at if stopper.stopped_at is not None else trainer.state.global_step
        raise TrainingInterrupted(step, marker.last or ckpt_dir)
    return out, seconds


def _write_outputs(
    report: TrainReport,
    trainer: Trainer,
    tokenizer: Any,
    params: Params,
    rows: dict[str, pd.DataFrame],
    *,
    model_dir: Path,
    reports_dir: Path,
    ckpt_dir: Path,
    stage_start: float,
) -> None:
    """Main process: fit the baseline into `report`, then write the model dir, train.json, plots and model card, and
    remove the run's checkpoints (they have served their purpose)."""
    import matplotlib.pyplot as plt

    from kit.finetune.baseline import fit_baseline
    from kit.finetune.figures import plot_confusion, plot_training_curves
    from kit.finetune.modelcard import render_model_card

    base = fit_baseline(rows["train"], rows["test"], report.labels, seed=params.finetune.seed)
    report.confusion["TF-IDF + LR baseline"] = base.pop("confusion")
    report.baseline = BaselineScores.model_validate(base)
    report.macro_f1_gain = round(report.model.macro_f1 - report.baseline.macro_f1, 4)
    report.gate.min_gain_over_baseline = params.finetune.min_gain_over_baseline
    report.gate.passed = report.gate.passed and 100 * report.macro_f1_gain >= params.finetune.min_gain_over_baseline
    save_model_dir(trainer.model, tokenizer, report.labels, model_dir)
    report.train.stage_time_s = round(time.perf_counter() - stage_start, 2)
    write_report(reports_dir / "train.json", report)
    for name, fig in (
        ("train_curves.png", plot_training_curves(report.history)),
        ("train_confusion.png", plot_confusion(report.confusion, report.labels)),
    ):
        save_figure(fig, reports_dir / "plots" / name)
        plt.close(fig)
    write_text(reports_dir / "model_card.md", render_model_card(report, params))
    for ckpt in checkpoints(ckpt_dir):
        shutil.rmtree(ckpt, ignore_errors=True)


def _summary(report: TrainReport) -> str:
    m, tr = report.model, report.train
    return (
        f"finetune done in {tr.stage_time_s:.0f}s: test macro-F1 {m.macro_f1:.4f} (baseline "
        f"{report.baseline.macro_f1:.4f}, gain {report.macro_f1_gain:+.4f}), accuracy {m.accuracy:.4f}; "
        f"train {tr.train_time_s:.0f}s, {tr.train_samples_per_s} samples/s"
    )


def _quiet_transformers(threads: int) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the Trainer's info lines would drown the progress bar
    hf_logging.disable_progress_bar()  # and so would a "Writing model shards" bar per checkpoint
    torch.set_num_threads(threads)


def run_finetune(
    params: Params,
    root: str | Path | None = None,
    *,
    data_dir: str | Path = LAYOUT.data_dir,
    model_dir: str | Path = LAYOUT.finetune_dir,
    reports_dir: str | Path = LAYOUT.reports_dir,
    enforce_gate: bool = True,
) -> TrainReport:
    """The whole stage: load splits, fine-tune (resuming a checkpoint of the same run), evaluate on the full test
    split, fit the baseline, write model + reports. Under torchrun every rank trains; only rank 0 writes outputs.

    Args:
        params: validated params (sections `model` and `finetune` are read).
        root: project root (default: found from cwd); the paths below and finetune.checkpoint_dir are relative to it.
        data_dir: the data stage's output directory.
        model_dir: where the fine-tuned model directory goes.
        reports_dir: where train.json, model_card.md, plots/ and train_live/ go.
        enforce_gate: raise QualityGateError when test macro-F1 < finetune.min_macro_f1 or its gain over the
            baseline < finetune.min_gain_over_baseline points (after writing everything).

    Returns:
        The report written to reports/train.json, with `history` (the Trainer's log) and `confusion` matrices,
        which are not written.

    Raises:
        DataError, KitError: unusable data or model.
        TrainingInterrupted: SIGTERM arrived; a checkpoint was written (rerun to resume).
        QualityGateError: test macro-F1 below the gate (model and reports are written).
    """
    stage_start = time.perf_counter()
    root = Path(root).resolve() if root else project_root()  # resolved: rel_path then strips it from the outputs
    data_dir, model_dir, reports_dir = (root / Path(p) for p in (data_dir, model_dir, reports_dir))
    t = params.finetune
    ckpt_dir = root / t.checkpoint_dir
    rank, world = rank_and_world()
    say = print if rank == 0 else (lambda *_a, **_k: None)
    if t.batch_size % world:
        raise KitError(f"finetune.batch_size ({t.batch_size}) must be divisible by the number of processes ({world})")
    _quiet_transformers(max(1, t.threads // local_world()))  # threads are per machine, not per job

    labels = read_labels(data_dir / "labels.json", DataError)
    splits = load_splits(data_dir, labels)
    rows = {
        "train": sample_rows(splits["train"], t.max_train_rows, t.seed),
        "validation": sample_rows(splits["validation"], t.max_eval_rows, t.seed),
        "test": splits["test"],
    }
    say(
        f"train rows {len(rows['train'])}/{len(splits['train'])}, validation rows {len(rows['validation'])}/"
        f"{len(splits['validation'])}, test rows {len(rows['test'])}; labels {labels}; processes {world}",
        flush=True,
    )

    fingerprint = run_fingerprint(params, data_dir, world)
    resume = find_resume_checkpoint(ckpt_dir, fingerprint, cleanup=rank == 0, log=lambda m: say(m, flush=True))
    model, tokenizer = load_model(params.model, labels, t.seed)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    say(f"model: {base_model_name(params.model)} ({n_params:.1f} M params)", flush=True)
    trainer, marker, stopper = _make_trainer(
        params,
        model,
        tokenizer,
        rows,
        fingerprint=fingerprint,
        ckpt_dir=ckpt_dir,
        live_dir=reports_dir / "train_live",
        world=world,
    )
    out, train_s = _train(trainer, resume, marker, stopper, ckpt_dir)
    scores, test_s = test_scores(trainer, tokenizer, params.model.max_length, rows["test"], labels)
    facts = run_facts(
        trainer,
        out,
        params,
        resume=resume,
        fingerprint=fingerprint,
        world=world,
        train_s=train_s,
        test_s=test_s,
        test_rows=len(rows["test"]),
    )
    report = build_report(
        params, labels, rows, len(splits["train"]), scores, facts, {"model_dir": rel_path(model_dir, root)}
    )
    report.history = trainer.state.log_history
    if rank == 0:
        _write_outputs(
            report,
            trainer,
            tokenizer,
            params,
            rows,
            model_dir=model_dir,
            reports_dir=reports_dir,
            ckpt_dir=ckpt_dir,
            stage_start=stage_start,
        )
        say(_summary(report), flush=True)
    trainer.accelerator.wait_for_everyone()
    if enforce_gate and rank == 0:
        check_quality_gate(report, t.min_macro_f1, t.min_gain_over_baseline)
    return report
