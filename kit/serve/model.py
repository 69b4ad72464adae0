"""The serving model: the serving-dir format, the one ONNX Runtime session factory and the one tokenize/pad path.
The server runs it; the optimize stage benchmarks and evaluates through the same calls (no torch here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import ModelDirError
from kit.core.io import read_labels
from kit.serve.textfeatures import TokenCounter

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "POOLED_NAME",
    "REQUIRED_FILES",
    "ModelMeta",
    "read_model_dir",
    "make_session",
    "session_logits",
    "load_tokenizer",
    "encode",
    "Tokens",
    "OnnxTextClassifier",
]

# The serving contract: the server feeds these int64 [batch, sequence] inputs and reads `logits`.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
# The serving graph's optional second output: the pooled sentence embedding the head reads (the prediction log's).
POOLED_NAME = "pooled"
REQUIRED_FILES = ("model.onnx", "tokenizer.json", "labels.json")


@dataclass(frozen=True)
class ModelMeta:
    """What the server needs to know about a serving model dir before loading it."""

    model_dir: Path
    labels: list[str]
    variant: str
    version: str
    max_length: int


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path}: cannot read JSON: {exc}") from None


def read_model_dir(model_dir: str | Path, default_max_length: int) -> ModelMeta:
    """Check a serving model dir and read its small metadata files (fast; the model itself is loaded later).

    Args:
        model_dir: dir with model.onnx, tokenizer.json, labels.json and optionally selection.json, serving.json.
        default_max_length: truncation length when serving.json is absent.

    Returns:
        The metadata (selection.json absent: variant and version "unknown").

    Raises:
        ModelDirError: the dir or a required file is missing, or a JSON file is malformed.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelDirError(f"{d}: model dir not found")
    missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
    if missing:
        raise ModelDirError(f"{d}: missing {', '.join(missing)} (expected the optimize stage's serving dir)")
    labels = read_labels(d / "labels.json", ModelDirError)
    selection = _read_json(d / "selection.json") if (d / "selection.json").is_file() else {}
    serving = _read_json(d / "serving.json") if (d / "serving.json").is_file() else {}
    max_length = serving.get("max_length", default_max_length) if isinstance(serving, dict) else default_max_length
    if not isinstance(max_length, int) or isinstance(max_length, bool) or not 2 <= max_length <= 8192:
        raise ModelDirError(f"{d / 'serving.json'}: max_length must be an integer in [2, 8192], got {max_length!r}")
    sel = selection if isinstance(selection, dict) else {}
    return ModelMeta(d, labels, str(sel.get("variant", "unknown")), str(sel.get("version", "unknown")), max_length)


# ------------------------------------------------------------------------------------------------ ONNX Runtime
def make_session(path: str | Path | bytes, threads: int, *, gpu: bool = False, spinning: bool = False) -> Any:
    """The ONNX Runtime session the server runs (and the optimize stage measures): fixed intra-op threads.

    Args:
        path: the .onnx file, or a serialized model (a graph edited in memory, e.g. with its pooled output added).
        threads: intra-op threads; inter-op is 1 (one inference at a time: a BERT graph is a chain).
        gpu: run on CUDA (fp16 variants), falling back to the CPU for ops CUDA lacks.
        spinning: idle intra-op threads spin rather than sleep (`serve.ort_spinning`).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Spinning threads answer the next op sooner but burn a core between ops and batches, which the event loop and
    # tokenizer may need (which wins depends on the machine), and keep the CPU reading high at any load.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=so, providers=providers)


def session_logits(session: Any, batch: dict[str, np.ndarray], output: str = OUTPUT_NAME) -> np.ndarray:
    """Run a session on an encoded batch, feeding only the inputs its graph declares; float32 logits."""
    names = {i.name for i in session.get_inputs()}
    out = session.run([output], {k: v for k, v in batch.items() if k in names})[0]
    return np.asarray(out).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(path: str | Path, max_length: int) -> Any:
    """A `tokenizers.Tokenizer` from tokenizer.json, truncating at `max_length` and padding to the batch's longest.

    The file's own padding settings give the pad token (a shipped tokenizer.json may pad to a fixed 128; padding to
    the longest text costs less); without any, "[PAD]".

    Raises:
        ModelDirError: the file cannot be loaded (names it).
    """
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception
        raise ModelDirError(f"{path}: cannot load tokenizer: {exc}") from None
    pad = tok.padding or {}
    token = pad.get("pad_token", "[PAD]")
    pad_id = pad.get("pad_id", tok.token_to_id(token))
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_type_id=pad.get("pad_type_id", 0), pad_token=token)
    tok.enable_truncation(max_length=max_length)
    return tok


def encode(tok: Any, texts: list[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize a batch into the int64 arrays of the serving contract.

    Args:
        tok: a tokenizer from load_tokenizer.
        texts: the batch.
        pad_to: truncate and pad every row to exactly this length (benchmarks); None: to the batch's longest.
    """
    if pad_to is None:
        encs = tok.encode_batch(list(texts))
    else:
        padding, truncation = tok.padding, tok.truncation
        tok.enable_truncation(max_length=pad_to)
        tok.enable_padding(
            pad_id=padding["pad_id"], pad_type_id=padding["pad_type_id"], pad_token=padding["pad_token"], length=pad_to
        )
        try:
            encs = tok.encode_batch(list(texts))
        finally:
            tok.enable_padding(**padding)
            if truncation:
                tok.enable_truncation(**truncation)
            else:
                tok.no_truncation()
    return {
        "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
    }


@dataclass(frozen=True, slots=True)
class Tokens:
    """One text tokenized and truncated, not padded: what the micro-batcher groups by length (len() is its tokens)."""

    ids: np.ndarray
    type_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class OnnxTextClassifier:
    """Tokenise a batch (padded to its longest text only) and run the ONNX classifier; returns probabilities and,
    when built with `pooled=True`, the pooled sentence embeddings the classification head read."""

    def __init__(
        self, meta: ModelMeta, threads: int, *, pooled: bool = False, counts: bool = False, spinning: bool = False
    ):
        """Args:
        meta: from `read_model_dir`.
        threads: ONNX Runtime intra-op threads.
        pooled: also return the pooled embedding: the serving graph's `pooled` output, else the pooler's tensor
            added as an output in memory (that needs the `onnx` package).
        counts: also return each text's token figures (`TokenCounter`) from the batch it ran.
        spinning: ONNX Runtime's idle threads spin (`make_session`).

        Raises:
            ModelDirError: the tokenizer or the ONNX graph cannot be loaded, the graph's output width differs
                from the number of labels, or `pooled` and the graph has no pooled embedding.
        """
        d = meta.model_dir
        self.tokenizer = load_tokenizer(d / "tokenizer.json", meta.max_length)
        # The same tokenizer without padding: per-text tokens for the batcher, padded once per batch by `run_tokens`.
        self._unpadded = type(self.tokenizer).from_str(self.tokenizer.to_str())
        self._unpadded.no_padding()
        self._pad_id = int(self.tokenizer.padding["pad_id"])
        self._pad_type_id = int(self.tokenizer.padding["pad_type_id"])
        self.pooled_name: str | None = None
        self.counter = TokenCounter(self.tokenizer) if counts else None
        self.session = _session(d / "model.onnx", threads, spinning=spinning)
        if pooled and POOLED_NAME in {o.name for o in self.session.get_outputs()}:
            self.pooled_name = POOLED_NAME  # the optimize stage's serving graph declares it: no `onnx` needed
        elif pooled:
            from kit.serve.pooled import graph_with_pooled_output  # imports onnx: a graph made elsewhere

            source, self.pooled_name = graph_with_pooled_output(d / "model.onnx")
            self.session = _session(source, threads, d / "model.onnx", spinning=spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - set(INPUT_NAMES)
        if unknown or "input_ids" not in self.input_names:
            raise ModelDirError(f"{d / 'model.onnx'}: unexpected inputs {self.input_names}")
        outputs = [o.name for o in self.session.get_outputs() if o.name != self.pooled_name]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        width = next(o for o in self.session.get_outputs() if o.name == self.output_name).shape[-1]
        if isinstance(width, int) and width != len(meta.labels):
            raise ModelDirError(f"{d}: model has {width} outputs but labels.json lists {len(meta.labels)} labels")
        self.meta = meta

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, float32 [len(texts), num_labels]."""
        return _softmax(session_logits(self.session, encode(self.tokenizer, texts), self.output_name))

    def predict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """One run of the graph: class probabilities float32 [n, num_labels], pooled embeddings float32 [n, hidden]
        (None unless built with `pooled=True`) and token figures [n, 3] (None unless built with `counts=True`)."""
        return self._run(encode(self.tokenizer, texts))

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        """Each text's tokens, truncated at max_length and not padded (thread-safe: the batcher calls it per request)."""
        return [
            Tokens(np.asarray(e.ids, dtype=np.int64), np.asarray(e.type_ids, dtype=np.int64))
            for e in self._unpadded.encode_batch(list(texts))
        ]

    def run_tokens(self, tokens: list[Tokens]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """`predict` on texts tokenized before (`tokenize`): padded here to the batch's longest, one run of the graph."""
        n, width = len(tokens), max(len(t) for t in tokens)
        ids = np.full((n, width), self._pad_id, dtype=np.int64)
        types = np.full((n, width), self._pad_type_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, t in enumerate(tokens):
            ids[row, : len(t)], types[row, : len(t)], mask[row, : len(t)] = t.ids, t.type_ids, 1
        return self._run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})

    def filler(self, n: int, length: int) -> list[Tokens]:
        """`n` texts of exactly `length` tokens (special tokens included): warm-up and run-cost calibration."""
        full = self.tokenize(["warm up " * length])[0]
        keep = min(length, len(full)) - 1  # the text's head, then its closing special token
        one = Tokens(
            np.concatenate([full.ids[:keep], full.ids[-1:]]), np.concatenate([full.type_ids[:keep], full.type_ids[-1:]])
        )
        return [one] * n

    def _run(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        names = set(self.input_names)
        feed = {k: v for k, v in batch.items() if k in names}
        counts = None if self.counter is None else self.counter.counts(batch["input_ids"], batch["attention_mask"])
        if self.pooled_name is None:
            logits = self.session.run([self.output_name], feed)[0]
            return _softmax(np.asarray(logits, dtype=np.float32)), None, counts
        logits, pooled = self.session.run([self.output_name, self.pooled_name], feed)
        return _softmax(np.asarray(logits, dtype=np.float32)), np.asarray(pooled, dtype=np.float32), counts


def _session(source: Path | bytes, threads: int, path: Path | None = None, *, spinning: bool = False) -> Any:
    """An ORT session of a file (or of `path`'s graph edited in memory), its failure named by the file."""
    try:
        return make_session(source, threads, spinning=spinning)
    except Exception as exc:
        raise ModelDirError(f"{path if path is not None else source!s}: cannot load ONNX model: {exc}") from None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
