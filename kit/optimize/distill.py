"""Distil a fine-tuned classifier into a shallower student: copy a subset of its layers, then train on its soft labels.
The student (fewer layers, same width) is exported and quantised like the teacher, so selection weighs it the same way."""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import KitError
from kit.core.io import write_json, write_text
from kit.optimize.teacher import Rows, cached_logits, logits_key, rows_logits, tokenise

__all__ = ["student_layers", "make_student", "distill"]


def student_layers(depth: int | list[int], n: int) -> list[int]:
    """The teacher layers a student keeps: a list as given, or a count spread evenly from layer 0 (3 of 6: [0, 2, 4]).

    Args:
        depth: optimize.student_layers, a layer count or teacher layer indices.
        n: the teacher's number of layers.

    Raises:
        KitError: a count above n (a student cannot be deeper than its teacher).
    """
    if isinstance(depth, list):
        return list(depth)
    if not 1 <= depth <= n:
        raise KitError(f"optimize.student_layers: {depth} layers asked but the teacher has {n}")
    return [i * n // depth for i in range(depth)]


def make_student(teacher: Any, layers: list[int]) -> Any:
    """A copy of `teacher` keeping only the encoder layers `layers` (in that order); embeddings, pooler and head kept.

    Args:
        teacher: a HF BERT-like sequence classifier.
        layers: teacher layer indices, e.g. [0, 2, 4].

    Raises:
        KitError: an index is out of range or repeated.
    """
    import torch

    n = teacher.config.num_hidden_layers
    if not layers or any(i < 0 or i >= n for i in layers) or len(set(layers)) != len(layers):
        raise KitError(f"optimize.student_layers: {layers} must be distinct indices in 0..{n - 1}")
    student = copy.deepcopy(teacher)
    enc = getattr(student, student.base_model_prefix).encoder
    enc.layer = torch.nn.ModuleList([enc.layer[i] for i in layers])
    student.config.num_hidden_layers = len(layers)
    # Layer modules remember their position for caching; renumber so the student is self-consistent when saved.
    for j, layer in enumerate(enc.layer):
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = j
    return student


# Files that make up a HF tokenizer: copied from the teacher, so the student reads text exactly as the teacher did.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)


def _soft_labels(
    teacher: Any, teacher_dir: Path, rows: Rows, texts: list[str], pad_id: int, max_length: int, **kw: Any
) -> tuple[np.ndarray, bool]:
    """The teacher's logits for the rows: from `logits_cache` when it holds this teacher's for these rows, else
    computed (ONNX Runtime when `teacher_onnx` is given) and stored there. Returns (logits, cached)."""
    cache, onnx_path, threads = kw["logits_cache"], kw["teacher_onnx"], kw["threads"]

    def compute() -> np.ndarray:
        return rows_logits(teacher, rows, pad_id, onnx_path=onnx_path, threads=threads)

    if cache is None:
        return compute(), False
    logits, hit = cached_logits(cache, logits_key(teacher_dir, texts, max_length), compute)
    print(f"teacher logits: {'reused from' if hit else 'computed, stored in'} {Path(cache).name}")
    return logits, hit


def _progress_callback(losses: list[float]) -> Any:
    """A Trainer callback driving a kit progress bar over optimizer steps (a widget in JupyterLab, lines under
    `kit run`), the running loss in its postfix."""
    from transformers import TrainerCallback

    from kit.core.progress import progress

    class DistillProgress(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            self.bar = progress(total=state.max_steps, desc="distill", unit="step")

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            self.bar.update(state.global_step - self.bar.n)
            if losses:
                self.bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}", refresh=False)

        def on_train_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            self.bar.close()

    return DistillProgress()


def _collate(pad_id: int) -> Any:
    """Pad a list of training rows to their longest; labels and teacher logits as tensors."""
    import torch

    def collate(feats: list[dict[str, Any]]) -> dict[str, Any]:
        n = max(len(f["input_ids"]) for f in feats)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([f[key] + [value] * (n - len(f[key])) for f in feats], dtype=torch.long)

        return {
            "input_ids": pad("input_ids", pad_id),
            "attention_mask": pad("attention_mask", 0),
            "token_type_ids": pad("token_type_ids", 0),
            "labels": torch.tensor([f["labels"] for f in feats], dtype=torch.long),
            "teacher_logits": torch.tensor(np.stack([f["teacher_logits"] for f in feats])),
        }

    return collate


def _trainer(student: Any, rows: list[dict[str, Any]], pad_id: int, out_dir: Path, kw: dict[str, Any]) -> Any:
    """The transformers Trainer minimising alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE; losses in
    `trainer.distill_losses`."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    temperature, alpha = kw["temperature"], kw["alpha"]
    losses: list[float] = []

    class DistillTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN201
            t = inputs.pop("teacher_logits")
            y = inputs.pop("labels")
            out = model(**inputs)
            s = out.logits
            kl = (
                torch.nn.functional.kl_div(
                    torch.log_softmax(s / temperature, -1),
                    torch.log_softmax(t / temperature, -1),
                    reduction="batchmean",
                    log_target=True,
                )
                * temperature**2
            )
            ce = torch.nn.functional.cross_entropy(s, y)
            loss = alpha * kl + (1 - alpha) * ce
            losses.append(float(loss.detach()))
            return (loss, out) if return_outputs else loss

    args = TrainingArguments(
        output_dir=str(out_dir / "_trainer"),
        max_steps=kw["steps"],
        per_device_train_batch_size=kw["batch_size"],
        learning_rate=kw["learning_rate"],
        warmup_steps=0.1,  # below 1: a ratio of max_steps (transformers 5)
        lr_scheduler_type="linear",
        weight_decay=0.01,
        seed=kw["seed"],
        data_seed=kw["seed"],
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        train_sampling_strategy=kw["sampling"],
        disable_tqdm=True,  # the kit's own bar (DistillProgress) instead of the notebook HTML one papermill cannot show
    )
    trainer = DistillTrainer(model=student, args=args, train_dataset=rows, data_collator=_collate(pad_id))
    trainer.remove_callback(PrinterCallback)  # it prints the end-of-training metrics dict; the summary says it better
    trainer.add_callback(_progress_callback(losses))
    trainer.distill_losses = losses
    return trainer


def distill(
    teacher_dir: str | Path,
    out_dir: str | Path,
    texts: list[str],
    labels: np.ndarray,
    layers: int | list[int],
    steps: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    alpha: float,
    max_length: int,
    seed: int = 42,
    threads: int = 2,
    teacher_onnx: str | Path | None = None,
    teacher: Any | None = None,
    logits_cache: str | Path | None = None,
    sampling: str = "random",
) -> dict[str, Any]:
    """Train a student by knowledge distillation and save it as a HF model directory.

    Loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, label). The rows are
    tokenised once (the serving tokenizer); the teacher's logits are computed once up front (or reused from
    `logits_cache`); training uses the transformers Trainer (seeded, CPU).

    Args:
        teacher_dir: the fine-tuned model directory (config, weights, tokenizer, labels.json).
        out_dir: where the student goes (same files).
        texts, labels: training rows (labels as class ids).
        layers: teacher layers the student starts from, or their number (spread evenly; see student_layers).
        steps, batch_size: optimizer steps, rows per step.
        learning_rate: peak learning rate (linear decay, 10% warm-up).
        temperature, alpha: softening temperature T, weight of the distillation term.
        max_length: truncation length.
        seed: seeds init order, shuffling and dropout.
        threads: torch threads.
        teacher_onnx: parity-checked ONNX export of the teacher to compute its logits with (faster); None: PyTorch.
        teacher: the teacher already loaded from teacher_dir (None: load it).
        logits_cache: directory keeping the teacher's logits between runs (None: no cache).
        sampling: how batches are drawn, "random" or "group_by_length" (similar lengths together: less padding).

    Returns:
        A summary: layers, steps, rows, seconds (teacher logits and whether cached), final losses.
    """
    import torch
    from transformers import set_seed

    from kit.optimize.export import find_tokenizer, load_classifier
    from kit.serve.model import load_tokenizer

    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    if len(texts) != len(labels) or not texts:
        raise KitError(f"distillation needs matching non-empty texts and labels, got {len(texts)} / {len(labels)}")
    torch.set_num_threads(threads)
    set_seed(seed)
    start = time.perf_counter()
    teacher = teacher if teacher is not None else load_classifier(teacher_dir, eager=False)
    layers = student_layers(layers, teacher.config.num_hidden_layers)  # before the teacher's logits: fail fast
    tok = load_tokenizer(find_tokenizer(teacher_dir), max_length)
    pad_id = int((tok.padding or {}).get("pad_id", 0))
    enc = tokenise(tok, texts)
    t_logits, cached = _soft_labels(
        teacher, teacher_dir, enc, texts, pad_id, max_length,
        logits_cache=logits_cache, teacher_onnx=teacher_onnx, threads=threads,
    )  # fmt: skip
    t_teacher = time.perf_counter() - start
    student = make_student(teacher, layers)
    # A teacher shared with the export has eager attention; the student trains with PyTorch's fused default (SDPA),
    # as a freshly loaded model would.
    student.set_attn_implementation("sdpa")
    student.train()
    rows = [
        {
            "input_ids": enc["input_ids"][i],
            "attention_mask": [1] * len(enc["input_ids"][i]),
            "token_type_ids": enc["token_type_ids"][i],
            "labels": int(labels[i]),
            "teacher_logits": t_logits[i],
        }
        for i in range(len(texts))
    ]
    kw = dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed, sampling=sampling)
    trainer = _trainer(student, rows, pad_id, out_dir, {**kw, "temperature": temperature, "alpha": alpha})
    trainer.train()
    losses: list[float] = trainer.distill_losses
    student.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(str(out_dir))
    for name in _TOKENIZER_FILES + ("labels.json",):
        if (teacher_dir / name).is_file():
            write_text(out_dir / name, (teacher_dir / name).read_text())
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    summary = {
        **kw,
        "layers": list(layers),
        "rows": len(texts),
        "epochs": round(steps * batch_size / len(texts), 3),
        "teacher_logits_s": round(t_teacher, 1),
        "teacher_logits_cached": cached,
        "seconds": round(time.perf_counter() - start, 1),
        "loss_first": round(float(np.mean(losses[:10])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
        "temperature": temperature,
        "alpha": alpha,
    }
    write_json(out_dir / "distill.json", summary)
    return summary
