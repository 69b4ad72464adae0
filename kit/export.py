"""Export a fine-tuned sequence classifier to ONNX, derive faster variants (fused graph, INT8, fp16) and check them.
Also picks the serving variant and writes the serving directory the model server loads (the ONNX + tokenizer contract)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import KitError, ParityError
from kit.io import atomic_path, write_json

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "ModelSpec",
    "Variant",
    "find_tokenizer",
    "load_tokenizer",
    "encode",
    "read_labels",
    "load_classifier",
    "model_spec",
    "gpu_available",
    "ort_session",
    "onnx_logits",
    "export_onnx",
    "check_parity",
    "optimize_graph",
    "quantize_int8",
    "convert_fp16",
    "build_variants",
    "variant_kinds",
    "build_all",
    "select_variant",
    "write_serving",
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


@dataclass
class Variant:
    """One built model file: where it is, how big, and how it was made."""

    name: str
    path: Path
    size_bytes: int
    kind: str  # fp32 | optimized | int8 | fp16
    source: str  # the HF model directory it came from
    parity_max_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["size_mb"] = round(self.size_bytes / 2**20, 3)
        return d


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


# --------------------------------------------------------------------------------------------- all variants
_KINDS = ("fp32", "optimized", "int8", "fp16")


def build_variants(
    model_dir: str | Path,
    out_dir: str | Path,
    prefix: str,
    kinds: list[str],
    parity_texts: list[str],
    max_length: int,
    atol: float,
    int8: dict[str, Any],
    opset: int = 17,
    threads: int = 2,
) -> list[Variant]:
    """Export `model_dir` and build the requested variants as `<out_dir>/<prefix>_<kind>.onnx`.

    The fp32 export is always built (every other variant derives from it, and it is the fallback to serve) and
    parity-checked; so is the fused graph. INT8 is quantized from the fused graph; fp16 only when a GPU is present.

    Args:
        model_dir: HF classifier directory.
        out_dir: directory for the .onnx files (a tokenizer.json is copied there too).
        prefix: variant name prefix, e.g. "onnx" or "student".
        kinds: subset of fp32, optimized, int8, fp16.
        parity_texts: real texts for the PyTorch-vs-ORT check.
        max_length: truncation length.
        atol: parity tolerance on logits.
        int8: keyword arguments of quantize_int8 (per_channel, reduce_range, weight_type).
        opset: ONNX opset of the export.
        threads: ORT threads for the check.

    Returns:
        The built variants (fp32 first), each with its size and parity figure.

    Raises:
        ParityError: an fp32 graph disagrees with PyTorch beyond atol.
    """
    unknown = sorted(set(kinds) - set(_KINDS))
    if unknown:
        raise KitError(f"unknown variant kind(s) {unknown}; known: {list(_KINDS)}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_classifier(model_dir)
    spec = model_spec(model)
    tok_json = find_tokenizer(model_dir)
    if not (out_dir / "tokenizer.json").is_file():
        shutil.copyfile(tok_json, out_dir / "tokenizer.json")
    batch = encode(load_tokenizer(tok_json, max_length), parity_texts)

    def _variant(kind: str, path: Path, diff: float | None = None, notes: list[str] | None = None) -> Variant:
        return Variant(f"{prefix}_{kind}", path, path.stat().st_size, kind, str(model_dir), diff, notes or [])

    fp32 = export_onnx(model, out_dir / f"{prefix}_fp32.onnx", opset=opset)
    built = [_variant("fp32", fp32, check_parity(model, fp32, batch, atol, threads))]
    needs_fused = any(k in kinds for k in ("optimized", "int8"))
    if needs_fused:
        fused = optimize_graph(fp32, out_dir / f"{prefix}_optimized.onnx", spec)
        built.append(_variant("optimized", fused, check_parity(model, fused, batch, atol, threads), [_fused_note(fused)]))
    if "int8" in kinds:
        q = quantize_int8(out_dir / f"{prefix}_optimized.onnx", out_dir / f"{prefix}_int8.onnx", spec, **int8)
        built.append(_variant("int8", q, notes=[f"quantized from {prefix}_optimized: {int8}"]))
    if "fp16" in kinds:
        if gpu_available():
            built.append(_variant("fp16", convert_fp16(fp32, out_dir / f"{prefix}_fp16.onnx", spec)))
        else:
            print(f"{prefix}_fp16: skipped, no CUDA GPU for ONNX Runtime on this machine")
    keep = {"fp32"} | set(kinds)
    return [v for v in built if v.kind in keep]


def variant_kinds(variants: list[str], prefix: str) -> list[str]:
    """The kinds requested for one model, e.g. ["optimized", "int8"] for prefix "student"."""
    return [v.split("_", 1)[1] for v in variants if v.startswith(prefix + "_")]


def build_all(
    opt: Any,
    max_length: int,
    model_dir: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Build every variant `opt.variants` asks for: teacher exports, then (if any student_* is asked) distil and
    export the student. Old .onnx files in out_dir are removed first, so the directory holds exactly this run's.

    Args:
        opt: the `optimize` params section.
        max_length: tokenizer truncation (model.max_length).
        model_dir: the fine-tuned model.
        train_path: training split (distillation rows).
        test_path: test split (parity texts).
        out_dir: models/onnx; the student's HF directory goes to out_dir/student.

    Returns:
        {"variants": [Variant, ...] (requested ones, in params order, plus onnx_fp32), "distill": summary or None}.
    """
    import pandas as pd

    from kit.bench import read_texts

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise KitError(f"{model_dir}: no fine-tuned model (config.json missing); run the finetune stage first")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.onnx"):
        old.unlink()
    test_texts, _ = read_texts(test_path, label_column=None)
    parity = test_texts[: opt.parity_rows]
    int8 = {"per_channel": opt.int8_per_channel, "reduce_range": opt.int8_reduce_range, "weight_type": opt.int8_weight_type}
    common = dict(parity_texts=parity, max_length=max_length, atol=opt.parity_atol, int8=int8, opset=opt.opset,
                  threads=opt.threads)
    built = build_variants(model_dir, out_dir, "onnx", variant_kinds(opt.variants, "onnx"), **common)
    summary = None
    student_kinds = variant_kinds(opt.variants, "student")
    if student_kinds:
        from kit.distill import distill

        train_texts, train_labels = read_texts(train_path)
        if train_labels is None:
            raise KitError(f"{train_path}: no label_id column for distillation")
        n = min(len(train_texts), opt.distill_rows or opt.distill_steps * opt.distill_batch_size)
        idx = pd.Series(range(len(train_texts))).sample(n=n, random_state=opt.seed).to_numpy()
        summary = distill(
            model_dir, out_dir / "student", [train_texts[i] for i in idx], train_labels[idx],
            layers=list(opt.student_layers), steps=opt.distill_steps, batch_size=opt.distill_batch_size,
            learning_rate=opt.distill_learning_rate, temperature=opt.distill_temperature, alpha=opt.distill_alpha,
            max_length=max_length, seed=opt.seed, threads=opt.threads,
            teacher_onnx=next(p for p in (out_dir / "onnx_optimized.onnx", out_dir / "onnx_fp32.onnx") if p.is_file()),
        )
        built += build_variants(out_dir / "student", out_dir, "student", student_kinds, **common)
    wanted = set(opt.variants) | {"onnx_fp32"}
    built = [v for v in built if v.name in wanted]
    rank = {n: i for i, n in enumerate(["onnx_fp32", *opt.variants])}
    built.sort(key=lambda v: rank[v.name])
    return {"variants": built, "distill": summary}


def _fused_note(path: Path) -> str:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return f"fused ops: {props.get(_META_PREFIX + 'fused', '{}')}"


# ------------------------------------------------------------------------------------------------- selection
def select_variant(
    rows: list[dict[str, Any]], reference_f1: float, max_f1_drop: float, fallback: str
) -> dict[str, Any]:
    """Pick the fastest variant whose macro-F1 is within `max_f1_drop` of the PyTorch model's.

    Args:
        rows: one dict per candidate with `variant`, `macro_f1` and `speedup` (geometric mean of throughput ratios
            over PyTorch across the benchmarked batch sizes and lengths).
        reference_f1: the PyTorch model's macro-F1 on the same texts.
        max_f1_drop: largest allowed drop (absolute, 0.01 = one point).
        fallback: the variant served when none qualifies (the fp32 export).

    Returns:
        {"variant", "reason", "qualified": bool, "candidates": [...]} (candidates sorted fastest first).
    """
    cands = sorted(rows, key=lambda r: -r["speedup"])
    for r in cands:
        r["f1_drop"] = reference_f1 - r["macro_f1"]
        r["qualifies"] = r["f1_drop"] <= max_f1_drop + 1e-12
    ok = [r for r in cands if r["qualifies"]]
    if ok:
        win = ok[0]
        faster = [r["variant"] for r in cands if r["speedup"] > win["speedup"]]
        reason = (
            f"fastest variant within the macro-F1 budget: {win['speedup']:.2f}x PyTorch (geometric mean of throughput "
            f"ratios), macro-F1 drop {100 * win['f1_drop']:.2f} points <= {100 * max_f1_drop:.2f}"
        )
        if faster:
            reason += f"; faster but over budget: {', '.join(faster)}"
        return {"variant": win["variant"], "reason": reason, "qualified": True, "candidates": cands}
    return {
        "variant": fallback,
        "reason": f"no variant kept macro-F1 within {100 * max_f1_drop:.2f} points of PyTorch; serving the fp32 export",
        "qualified": False,
        "candidates": cands,
    }


def _sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def write_serving(
    onnx_path: str | Path,
    tokenizer_json: str | Path,
    labels: list[str],
    max_length: int,
    selection: dict[str, Any],
    out_dir: str | Path,
) -> dict[str, Any]:
    """Write the directory the model server loads.

    Files: model.onnx (the chosen variant), tokenizer.json (HF tokenizers format, truncation at max_length and
    padding to the longest text configured in it), serving.json (max_length, input/output names, labels, version),
    labels.json ({"labels": [...]}) and selection.json (the winner, why, its figures and the version).

    Args:
        onnx_path: the chosen variant file.
        tokenizer_json: the model's tokenizer.json.
        labels: class names in logit order.
        max_length: truncation length.
        selection: from select_variant, plus any figures to keep.
        out_dir: the serving directory (replaced file by file, each atomically).

    Returns:
        The selection record as written (with `version`).
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = onnx.load(str(onnx_path))
    inputs = [i.name for i in m.graph.input]
    outputs = [o.name for o in m.graph.output]
    n_out = m.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    if sorted(inputs) != sorted(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
        raise KitError(f"{onnx_path}: inputs {inputs} / outputs {outputs} break the serving contract")
    if n_out and n_out != len(labels):
        raise KitError(f"{onnx_path}: {n_out} logits but {len(labels)} labels")
    with atomic_path(out_dir / "model.onnx", suffix=".onnx") as tmp:
        shutil.copyfile(onnx_path, tmp)
    tok = load_tokenizer(tokenizer_json, max_length)
    with atomic_path(out_dir / "tokenizer.json", suffix=".json") as tmp:
        tok.save(str(tmp))
    write_json(out_dir / "labels.json", {"labels": list(labels)})
    version = _sha256(out_dir / "model.onnx", out_dir / "tokenizer.json", out_dir / "labels.json")[:12]
    serving = {
        "max_length": max_length,
        "padding": "longest",
        "truncation": True,
        "inputs": list(INPUT_NAMES),
        "input_dtype": "int64",
        "output": OUTPUT_NAME,
        "labels": list(labels),
        "variant": selection["variant"],
        "version": version,
    }
    write_json(out_dir / "serving.json", serving)
    record = {**selection, "version": version, "model_sha256": _sha256(out_dir / "model.onnx")}
    write_json(out_dir / "selection.json", record)
    for f in ("model.onnx", "tokenizer.json", "labels.json", "serving.json", "selection.json"):
        # Temp files are created 0600; the server may run as another (non-root) user in its container.
        (out_dir / f).chmod(0o644)
    return record
