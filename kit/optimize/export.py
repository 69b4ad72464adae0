"""Export a fine-tuned sequence classifier to ONNX, derive faster variants (fused graph, INT8, fp16) and check them.
Also the model spec each file carries in its metadata (read back cheaply), and PyTorch inference for the checks."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from kit.core.errors import KitError, ParityError
from kit.core.io import atomic_path
from kit.serve.model import INPUT_NAMES, OUTPUT_NAME, make_session, session_logits

__all__ = [
    "ModelSpec",
    "read_onnx_metadata",
    "is_kit_onnx",
    "find_tokenizer",
    "load_classifier",
    "model_spec",
    "torch_logits",
    "gpu_available",
    "export_onnx",
    "check_parity",
    "optimize_graph",
    "fused_note",
    "quantize_int8",
    "convert_fp16",
]
# Every ONNX file the kit writes carries metadata_props under this prefix (model shape, kind): its marker.
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


# ------------------------------------------------------------------------------------------ metadata, tokenizer
def _varint(f: BinaryIO) -> int | None:
    shift = value = 0
    while byte := f.read(1):
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    return None


def _length_delimited(f: BinaryIO, field: int) -> Iterator[bytes]:
    """Payloads of one length-delimited protobuf field, seeking past every other field (a model's weights are never
    read)."""
    while (tag := _varint(f)) is not None:
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _varint(f)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, 1)
        elif wire == 2:
            size = _varint(f)
            if size is None:
                return
            if number == field:
                yield f.read(size)
            else:
                f.seek(size, 1)
        else:  # groups (3, 4) are not in ONNX's schema: not an ONNX file
            return


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props, read from the protobuf framing alone (ms for a GB file; onnx.load parses it
    all). A file that is not ONNX gives {}."""
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            for entry in _length_delimited(f, 14):  # ModelProto.metadata_props
                kv = {1: "", 2: ""}
                for num in (1, 2):  # StringStringEntryProto: key = 1, value = 2
                    kv[num] = b"".join(_length_delimited(io.BytesIO(entry), num)).decode("utf-8", "replace")
                props[kv[1]] = kv[2]
    except (OSError, ValueError):
        return {}
    return props


def is_kit_onnx(path: str | Path) -> bool:
    """Whether the kit wrote this .onnx file (its metadata carries the kit's stamp); a user's own model is not."""
    return f"{_META_PREFIX}kind" in read_onnx_metadata(path)


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
    got = session_logits(make_session(onnx_path, threads), batch)
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
    return f"fused ops: {read_onnx_metadata(path).get(_META_PREFIX + 'fused', '{}')}"


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
