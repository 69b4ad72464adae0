"""Export a fine-tuned sequence classifier to ONNX, derive faster variants (fused graph, INT8, fp16) and check them.
Also the tokenizer, label and model-spec helpers of the serving contract, and PyTorch / ONNX Runtime inference."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import KitError, ParityError
from kit.core.io import atomic_path

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "ModelSpec",
    "find_tokenizer",
    "load_tokenizer",
    "encode",
    "read_labels",
    "load_classifier",
    "model_spec",
    "torch_logits",
    "gpu_available",
    "ort_session",
    "onnx_logits",
    "export_onnx",
    "check_parity",
    "optimize_graph",
    "fused_note",
    "quantize_int8",
    "convert_fp16",
]
# The serving contract: the server feeds exactly these int64 [batch, sequence] inputs and reads `logits`.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
_META_PREFIX = "kit."


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a BERT-like encoder: enough to count its FLOPs and to configure the ORT fusion passes."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_labels: int

    def flops(self, batch: int, seq: int) -> float:
        """Multiply-add FLOPs (2 per MAC) of one forward pass over a [batch, seq] input (embeddings excluded).

        Per layer and token: Q, K, V and output projections (4 h^2 MACs), the feed-forward (2 h i MACs); per layer
        and sequence: attention scores and the weighted sum (2 s^2 h MACs). Plus pooler (h^2) and classifier (h c).
        """
        h, i, s = self.hidden_size, self.intermediate_size, seq
        per_layer = batch * s * (4 * h * h + 2 * h * i) + 2 * batch * s * s * h
        head = batch * (h * h + h * self.num_labels)
        return 2.0 * (self.num_layers * per_layer + head)

    def metadata(self) -> dict[str, str]:
        """ONNX metadata_props that let a bare .onnx file be benchmarked with FLOP counts."""
        return {f"{_META_PREFIX}{k}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> "ModelSpec | None":
        try:
            return cls(**{k: int(props[f"{_META_PREFIX}{k}"]) for k in cls.__dataclass_fields__})
        except (KeyError, ValueError):
            return None


# ------------------------------------------------------------------------------------------ tokenizer and labels
def find_tokenizer(path: str | Path) -> Path:
    """The tokenizer.json for a model: inside a model directory, or beside / one level above an .onnx file.

    Raises:
        KitError: none found (name the file tried).
    """
    path = Path(path)
    base = path if path.is_dir() else path.parent
    for cand in (base / "tokenizer.json", base.parent / "tokenizer.json"):
        if cand.is_file():
            return cand
    raise KitError(f"{path}: no tokenizer.json in {base} or {base.parent}; pass a tokenizer explicitly")


def load_tokenizer(path: str | Path, max_length: int) -> Any:
    """A `tokenizers.Tokenizer` (what the server uses) truncating at `max_length` and padding to the longest text.

    Args:
        path: a tokenizer.json, or a model directory / .onnx file to find one for.
        max_length: truncation length in tokens.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    tok = Tokenizer.from_file(str(path if path.suffix == ".json" else find_tokenizer(path)))
    tok.enable_truncation(max_length=max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tok


def encode(tok: Any, texts: list[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize a batch into the int64 arrays of the serving contract.

    Args:
        tok: a tokenizer from load_tokenizer.
        texts: the batch.
        pad_to: pad every row to exactly this length (benchmarks); None: to the longest row.
    """
    if pad_to is not None:
        trunc = tok.truncation
        tok.enable_truncation(max_length=pad_to)
        tok.enable_padding(pad_id=tok.padding["pad_id"], pad_token=tok.padding["pad_token"], length=pad_to)
    try:
        encs = tok.encode_batch(list(texts))
    finally:
        if pad_to is not None:
            tok.enable_padding(pad_id=tok.padding["pad_id"], pad_token=tok.padding["pad_token"])
            if trunc:
                tok.enable_truncation(max_length=trunc["max_length"])
            else:
                tok.no_truncation()
    return {
        "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
    }


def read_labels(model_dir: str | Path) -> list[str]:
    """Class names in id order: labels.json ({"labels": [...]}) if present, else config.json's id2label."""
    model_dir = Path(model_dir)
    lf = model_dir / "labels.json"
    if lf.is_file():
        labels = json.loads(lf.read_text()).get("labels")
        if not isinstance(labels, list) or not labels:
            raise KitError(f"{lf}: expected {{\"labels\": [...]}} with at least one label")
        return [str(x) for x in labels]
    cfg = json.loads((model_dir / "config.json").read_text())
    id2label = cfg.get("id2label") or {}
    n = cfg.get("num_labels") or len(id2label)
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


# ------------------------------------------------------------------------------------------------------ PyTorch
def load_classifier(model_dir: str | Path, eager: bool = True) -> Any:
    """Load a HF sequence classifier in eval mode.

    Args:
        model_dir: directory with config.json and weights.
        eager: use the eager attention implementation; the TorchScript export of SDPA attention is not fused by
            the ORT transformer optimizer (see ENVIRONMENT.md), so exports need eager.
    """
    from transformers import AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise KitError(f"{model_dir}: not a HF model directory (no config.json)")
    kwargs = {"attn_implementation": "eager"} if eager else {}
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), **kwargs)
    model.eval()
    return model


def model_spec(model_or_config: Any) -> ModelSpec:
    """ModelSpec from a HF model or its config."""
    cfg = getattr(model_or_config, "config", model_or_config)
    return ModelSpec(
        num_layers=int(cfg.num_hidden_layers),
        hidden_size=int(cfg.hidden_size),
        intermediate_size=int(cfg.intermediate_size),
        num_heads=int(cfg.num_attention_heads),
        num_labels=int(cfg.num_labels),
    )


def torch_logits(model: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """PyTorch logits of an encoded batch (float32 numpy)."""
    import torch

    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    return out.logits.float().numpy()


# ------------------------------------------------------------------------------------------------ ONNX Runtime
def gpu_available() -> bool:
    """Whether ONNX Runtime can run on a CUDA GPU here (fp16 variants are built only then)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def ort_session(path: str | Path, threads: int, gpu: bool = False) -> Any:
    """An ONNX Runtime session with a fixed number of intra-op threads (so every variant gets the same CPU).

    Args:
        path: the .onnx file.
        threads: intra-op threads; inter-op is 1 (a BERT graph is a chain, parallel branches do not pay).
        gpu: run on CUDA (fp16 variants).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


def onnx_logits(session: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Run a session on an encoded batch, feeding only the inputs the graph declares."""
    names = {i.name for i in session.get_inputs()}
    return np.asarray(session.run([OUTPUT_NAME], {k: v for k, v in batch.items() if k in names})[0], dtype=np.float32)


def _set_metadata(path: Path, spec: ModelSpec, extra: dict[str, str]) -> None:
    """Stamp the model spec and provenance into the ONNX file (the optimizer and quantizer drop them)."""
    import onnx

    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    props.update(spec.metadata())
    props.update({f"{_META_PREFIX}{k}": v for k, v in extra.items()})
    del m.metadata_props[:]
    for k, v in sorted(props.items()):
        m.metadata_props.add(key=k, value=v)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(m, str(tmp))
    path.chmod(0o644)  # temp files are 0600; model files are meant to be shared


def export_onnx(model: Any, out_path: str | Path, opset: int = 17) -> Path:
    """Export a classifier to ONNX with dynamic batch and sequence axes (TorchScript exporter, full fusion later).

    Args:
        model: a HF sequence classifier loaded with eager attention.
        out_path: the .onnx file to write.
        opset: ONNX opset.

    Returns:
        out_path. Inputs input_ids, attention_mask, token_type_ids (int64 [batch, sequence]); output logits.
    """
    import torch

    class _Logits(torch.nn.Module):
        # A fixed positional signature and a single tensor output make the graph's interface the serving contract.
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits

    out_path = Path(out_path)
    dummy = tuple(torch.ones(2, 16, dtype=torch.long) for _ in INPUT_NAMES)
    axes = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    with atomic_path(out_path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Logits(model).eval(),
            dummy,
            str(tmp),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _set_metadata(out_path, model_spec(model), {"kind": "fp32"})
    return out_path


def check_parity(
    model: Any, onnx_path: str | Path, batch: dict[str, np.ndarray], atol: float, threads: int = 2
) -> float:
    """Compare ONNX Runtime logits with PyTorch logits on the same real inputs.

    Args:
        model: the PyTorch classifier the file was exported from.
        onnx_path: the .onnx file.
        batch: encoded real texts (from `encode`).
        atol: largest allowed absolute difference of any logit.
        threads: ORT intra-op threads.

    Returns:
        The max absolute difference.

    Raises:
        ParityError: the difference exceeds atol (the message gives the max difference and where).
    """
    ref = torch_logits(model, batch)
    got = onnx_logits(ort_session(onnx_path, threads), batch)
    if got.shape != ref.shape:
        raise ParityError(onnx_path, float("inf"), atol, f"logits shape {got.shape} != PyTorch {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    max_diff = float(np.nan_to_num(diff, nan=np.inf).max())
    if not max_diff <= atol:
        row, col = np.unravel_index(int(np.nan_to_num(diff, nan=np.inf).argmax()), diff.shape)
        raise ParityError(
            onnx_path, max_diff, atol, f"worst at text {row}, logit {col}: ORT {got[row, col]:.6f} vs PyTorch "
            f"{ref[row, col]:.6f}; {int((diff > atol).sum())} of {diff.size} logits out of tolerance"
        )
    return max_diff


def optimize_graph(src: str | Path, dst: str | Path, spec: ModelSpec) -> Path:
    """Fuse attention, embedding+LayerNorm, LayerNorm, GELU and bias nodes with the ORT transformer optimizer.

    Args:
        src: fp32 ONNX export (eager attention, TorchScript exporter).
        dst: where the fused fp32 graph goes.
        spec: heads and hidden size for the attention fusion.

    Returns:
        dst. Fused-op counts are stamped into the file's metadata (kit.fused).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    dst = Path(dst)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(
            str(src), model_type="bert", num_heads=spec.num_heads, hidden_size=spec.hidden_size, opt_level=1
        )
    fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    with atomic_path(dst, suffix=".onnx") as tmp:
        opt.save_model_to_file(str(tmp))
    _set_metadata(dst, spec, {"kind": "optimized", "fused": json.dumps(fused, sort_keys=True)})
    return dst


def fused_note(path: Path) -> str:
    """The fused-op counts optimize_graph stamped into a file's metadata, as a one-line note."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return f"fused ops: {props.get(_META_PREFIX + 'fused', '{}')}"


def quantize_int8(
    src: str | Path, dst: str | Path, spec: ModelSpec, per_channel: bool, reduce_range: bool, weight_type: str
) -> Path:
    """Dynamic INT8 quantization (weights offline, activations per batch) with onnxruntime.quantization.

    Args:
        src: an fp32 graph (fused or not).
        dst: where the INT8 graph goes.
        spec: stamped into the metadata.
        per_channel: one scale per output channel of each weight (better accuracy, same speed).
        reduce_range: 7-bit weights, avoiding the u8s8 saturation of AVX2 machines without VNNI.
        weight_type: "qint8" (signed, fastest on x86) or "quint8".
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    wt = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[weight_type]
    root_log = logging.getLogger()
    level = root_log.level
    # The quantizer logs a generic "consider pre-processing" hint on the root logger (shape inference; the fused
    # graph is already optimised), which would read like a problem in every stage log.
    root_log.setLevel(logging.ERROR)
    try:
        with atomic_path(dst, suffix=".onnx") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(src),
                str(tmp),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=wt,
                # The fused graph's custom ops hide weight types from the quantizer; without this it fails with
                # "Unable to find data type for weight_name" (ENVIRONMENT.md).
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        root_log.setLevel(level)
    _set_metadata(
        dst, spec, {"kind": "int8", "int8": f"per_channel={per_channel},reduce_range={reduce_range},weights={weight_type}"}
    )
    return dst


def convert_fp16(src: str | Path, dst: str | Path, spec: ModelSpec) -> Path:
    """fp16 weights and activations (GPU only: CPUs run fp16 slower than fp32); inputs/outputs stay int64/fp32."""
    from onnxruntime.transformers.optimizer import optimize_model

    dst = Path(dst)
    opt = optimize_model(str(src), model_type="bert", num_heads=spec.num_heads, hidden_size=spec.hidden_size, use_gpu=True)
    opt.convert_float_to_float16(keep_io_types=True)
    with atomic_path(dst, suffix=".onnx") as tmp:
        opt.save_model_to_file(str(tmp))
    _set_metadata(dst, spec, {"kind": "fp16"})
    return dst
