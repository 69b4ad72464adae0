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

__all__ = ["make_student", "teacher_logits", "distill"]


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


def teacher_logits(
    teacher: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    batch_size: int = 64,
    onnx_path: str | Path | None = None,
    threads: int = 2,
) -> np.ndarray:
    """The teacher's logits for `texts` (sorted by length and padded per batch for speed).

    Args:
        teacher: the HF classifier.
        tokenizer: the serving tokenizer (kit.serve.model.load_tokenizer: truncation at max_length, padding to the
            batch's longest), so both paths below see exactly the inputs the served model sees.
        texts: rows to score.
        batch_size: rows per forward pass.
        onnx_path: a parity-checked fp32 ONNX export of the same teacher; when given, ONNX Runtime computes the
            logits (same values within the parity tolerance, about twice as fast as PyTorch on CPU).
        threads: ORT intra-op threads.
    """
    from tqdm import tqdm

    from kit.optimize.export import torch_logits
    from kit.serve.model import encode, make_session, session_logits

    out = np.empty((len(texts), teacher.config.num_labels), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    teacher.eval()
    sess = make_session(onnx_path, threads) if onnx_path else None
    for i in tqdm(range(0, len(order), batch_size), desc="teacher logits", unit="batch"):
        idx = order[i : i + batch_size]
        batch = encode(tokenizer, [texts[j] for j in idx])
        out[idx] = session_logits(sess, batch) if sess is not None else torch_logits(teacher, batch)
    return out


def distill(
    teacher_dir: str | Path,
    out_dir: str | Path,
    texts: list[str],
    labels: np.ndarray,
    layers: list[int],
    steps: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    alpha: float,
    max_length: int,
    seed: int = 42,
    threads: int = 2,
    teacher_onnx: str | Path | None = None,
) -> dict[str, Any]:
    """Train a student by knowledge distillation and save it as a HF model directory.

    Loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, label).
    The teacher's logits are computed once up front; training uses the transformers Trainer (seeded, CPU).

    Args:
        teacher_dir: the fine-tuned model directory (config, weights, tokenizer, labels.json).
        out_dir: where the student goes (same files).
        texts, labels: training rows (labels as class ids).
        layers: teacher layers the student starts from.
        steps: optimizer steps.
        batch_size: rows per step.
        learning_rate: peak learning rate (linear decay, 10% warm-up).
        temperature: softening temperature T.
        alpha: weight of the distillation term.
        max_length: truncation length.
        seed: seeds init order, shuffling and dropout.
        threads: torch threads.
        teacher_onnx: parity-checked ONNX export of the teacher to compute its logits with (faster); None: PyTorch.

    Returns:
        A summary: layers, steps, rows, seconds, final losses.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    from kit.optimize.export import find_tokenizer
    from kit.serve.model import load_tokenizer

    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    if len(texts) != len(labels) or not texts:
        raise KitError(f"distillation needs matching non-empty texts and labels, got {len(texts)} / {len(labels)}")
    torch.set_num_threads(threads)
    set_seed(seed)
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    teacher = AutoModelForSequenceClassification.from_pretrained(str(teacher_dir))
    serving_tok = load_tokenizer(find_tokenizer(teacher_dir), max_length)
    t_logits = teacher_logits(teacher, serving_tok, texts, onnx_path=teacher_onnx, threads=threads)
    t_teacher = time.perf_counter() - start
    student = make_student(teacher, layers)
    del teacher
    student.train()

    enc = tok(list(texts), truncation=True, max_length=max_length)
    rows = [
        {
            "input_ids": enc["input_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "token_type_ids": enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(enc["input_ids"][i]),
            "labels": int(labels[i]),
            "teacher_logits": t_logits[i],
        }
        for i in range(len(texts))
    ]
    pad_id = tok.pad_token_id or 0

    def collate(feats: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
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
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,  # below 1: a ratio of max_steps (transformers 5)
        lr_scheduler_type="linear",
        weight_decay=0.01,
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = DistillTrainer(model=student, args=args, train_dataset=rows, data_collator=collate)
    trainer.train()
    student.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    if (teacher_dir / "labels.json").is_file():
        write_text(out_dir / "labels.json", (teacher_dir / "labels.json").read_text())
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    summary = {
        "layers": list(layers),
        "steps": steps,
        "batch_size": batch_size,
        "rows": len(texts),
        "epochs": round(steps * batch_size / len(texts), 3),
        "teacher_logits_s": round(t_teacher, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "loss_first": round(float(np.mean(losses[:10])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
        "temperature": temperature,
        "alpha": alpha,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    write_json(out_dir / "distill.json", summary)
    return summary
