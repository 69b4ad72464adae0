"""Export a fine-tuned sequence classifier to ONNX, derive faster variants (fused graph, INT8, fp16) and check them.
Each file is stamped with its model spec (kit.optimize.metadata); PyTorch inference here serves the parity checks."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import KitError, ParityError
from kit.core.io import atomic_path
from kit.optimize.metadata import META_PREFIX, ModelSpec, read_onnx_metadata
from kit.serve.model import INPUT_NAMES, OUTPUT_NAME, make_session, session_logits

__all__ = [
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


# ------------------------------------------------------------------------------------------------------ tokenizer
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
    props.update({f"{META_PREFIX}{k}": v for k, v in extra.items()})
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
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

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
    model: Any,
    onnx_path: str | Path,
    batch: dict[str, np.ndarray],
    atol: float,
    threads: int = 2,
    ref: np.ndarray | None = None,
) -> float:
    """Compare ONNX Runtime logits with PyTorch logits on the same real inputs.

    Args:
        model: the PyTorch classifier the file was exported from.
        onnx_path: the .onnx file.
        batch: encoded real texts (from `encode`).
        atol: largest allowed absolute difference of any logit.
        threads: ORT intra-op threads.
        ref: PyTorch's logits for `batch` when already computed (one forward serves every graph of a model).

    Returns:
        The max absolute difference.

    Raises:
        ParityError: the difference exceeds atol (the message gives the max difference and where).
    """
    ref = torch_logits(model, batch) if ref is None else ref
    got = session_logits(make_session(onnx_path, threads), batch)
    if got.shape != ref.shape:
        raise ParityError(onnx_path, float("inf"), atol, f"logits shape {got.shape} != PyTorch {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    max_diff = float(np.nan_to_num(diff, nan=np.inf).max())
    if not max_diff <= atol:
        row, col = np.unravel_index(int(np.nan_to_num(diff, nan=np.inf).argmax()), diff.shape)
        raise ParityError(
            onnx_path,
            max_diff,
            atol,
            f"worst at text {row}, logit {col}: ORT {got[row, col]:.6f} vs PyTorch "
            f"{ref[row, col]:.6f}; {int((diff > atol).sum())} of {diff.size} logits out of tolerance",
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
    return f"fused ops: {read_onnx_metadata(path).get(META_PREFIX + 'fused', '{}')}"


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
        dst,
        spec,
        {"kind": "int8", "int8": f"per_channel={per_channel},reduce_range={reduce_range},weights={weight_type}"},
    )
    return dst


def convert_fp16(src: str | Path, dst: str | Path, spec: ModelSpec) -> Path:
    """fp16 weights and activations (GPU only: CPUs run fp16 slower than fp32); inputs/outputs stay int64/fp32."""
    from onnxruntime.transformers.optimizer import optimize_model

    dst = Path(dst)
    opt = optimize_model(
        str(src), model_type="bert", num_heads=spec.num_heads, hidden_size=spec.hidden_size, use_gpu=True
    )
    opt.convert_float_to_float16(keep_io_types=True)
    with atomic_path(dst, suffix=".onnx") as tmp:
        opt.save_model_to_file(str(tmp))
    _set_metadata(dst, spec, {"kind": "fp16"})
    return dst
