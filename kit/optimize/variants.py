"""Build the ONNX variants a run asks for (teacher exports, distilled student) from kit.optimize.export's steps.
Then choose the variant to serve and write the serving directory the model server loads (ONNX + tokenizer contract)."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.core.errors import KitError
from kit.core.io import atomic_path, rel_path, sha256_file, write_json, write_labels
from kit.core.params import VARIANT_KINDS
from kit.core.progress import StepTimer
from kit.optimize.export import (
    check_parity,
    convert_fp16,
    export_onnx,
    find_tokenizer,
    fused_note,
    gpu_available,
    load_classifier,
    model_spec,
    optimize_graph,
    quantize_int8,
    torch_logits,
)
from kit.optimize.metadata import is_kit_onnx
from kit.serve.model import INPUT_NAMES, OUTPUT_NAME, POOLED_NAME, encode, load_tokenizer
from kit.serve.pooled import add_named_pooled_output

__all__ = [
    "Variant",
    "build_variants",
    "variant_kinds",
    "build_all",
    "select_variant",
    "write_serving",
]


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

    def as_dict(self, root: str | Path | None = None) -> dict[str, Any]:
        """A JSON-ready record; with `root`, its paths relative to that project root (reports carry no machine path)."""
        d = asdict(self)
        d["path"] = rel_path(self.path, root) if root else str(self.path)
        d["source"] = rel_path(self.source, root) if root else self.source
        d["size_mb"] = round(self.size_bytes / 2**20, 3)
        return d


# --------------------------------------------------------------------------------------------- all variants
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
    model: Any | None = None,
    int8_base: str = "fused",
) -> list[Variant]:
    """Export `model_dir` and build the requested variants as `<out_dir>/<prefix>_<kind>.onnx`.

    The fp32 export is always built (every other variant derives from it, and it is the fallback to serve) and
    parity-checked; so is the fused graph. INT8 is quantized from the fused graph or the plain export (`int8_base`);
    fp16 only when a GPU is present.

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
        model: the classifier already loaded from model_dir with eager attention (None: load it).
        int8_base: "fused" (quantize the ORT-fused graph) or "plain" (the fp32 export).

    Returns:
        The built variants (fp32 first), each with its size and parity figure.

    Raises:
        ParityError: an fp32 graph disagrees with PyTorch beyond atol.
    """
    unknown = sorted(set(kinds) - set(VARIANT_KINDS))
    if unknown:
        raise KitError(f"unknown variant kind(s) {unknown}; known: {list(VARIANT_KINDS)}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else load_classifier(model_dir)
    spec = model_spec(model)
    tok_json = find_tokenizer(model_dir)
    with atomic_path(out_dir / "tokenizer.json", suffix=".json") as tmp:  # this model's, never a stale copy
        shutil.copyfile(tok_json, tmp)
    batch = encode(load_tokenizer(tok_json, max_length), parity_texts)

    def _variant(kind: str, path: Path, diff: float | None = None, notes: list[str] | None = None) -> Variant:
        v = Variant(f"{prefix}_{kind}", path, path.stat().st_size, kind, str(model_dir), diff, notes or [])
        parity = f", parity max diff {diff:.1e}" if diff is not None else ""
        print(f"built {v.name}: {v.size_bytes / 2**20:.1f} MB{parity}", flush=True)  # a line per file while it works
        return v

    ref = torch_logits(model, batch)  # PyTorch's logits, once for every graph checked against them
    fp32 = export_onnx(model, out_dir / f"{prefix}_fp32.onnx", opset=opset)
    built = [_variant("fp32", fp32, check_parity(model, fp32, batch, atol, threads, ref))]
    needs_fused = "optimized" in kinds or ("int8" in kinds and int8_base == "fused")
    if needs_fused:
        fused = optimize_graph(fp32, out_dir / f"{prefix}_optimized.onnx", spec)
        built.append(
            _variant("optimized", fused, check_parity(model, fused, batch, atol, threads, ref), [fused_note(fused)])
        )
    if "int8" in kinds:
        base = f"{prefix}_{'optimized' if int8_base == 'fused' else 'fp32'}"
        q = quantize_int8(out_dir / f"{base}.onnx", out_dir / f"{prefix}_int8.onnx", spec, **int8)
        built.append(_variant("int8", q, notes=[f"quantized from {base}: {int8}"]))
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


def _distill_rows(opt: Any, train_path: str | Path) -> tuple[list[str], Any]:
    """The training rows the student learns from: `distill_rows` (default steps x batch size) sampled with the seed."""
    import pandas as pd

    from kit.optimize.runners import read_texts

    texts, labels = read_texts(train_path)
    if labels is None:
        raise KitError(f"{train_path}: no label_id column for distillation")
    n = min(len(texts), opt.distill_rows or opt.distill_steps * opt.distill_batch_size)
    idx = pd.Series(range(len(texts))).sample(n=n, random_state=opt.seed).to_numpy()
    return [texts[i] for i in idx], labels[idx]


def build_all(
    opt: Any,
    max_length: int,
    model_dir: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    out_dir: str | Path,
    *,
    timer: StepTimer | None = None,
    logits_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Build every variant `opt.variants` asks for: teacher exports, then (if any student_* is asked) distil and
    export the student. The kit's old .onnx files in out_dir are removed first, so it holds exactly this run's
    variants; an .onnx file the kit did not write (no kit metadata) is left alone. The teacher is loaded once, for
    the exports and the distillation alike.

    Args:
        opt: the `optimize` params section.
        max_length: tokenizer truncation (model.max_length).
        model_dir: the fine-tuned model.
        train_path: training split (distillation rows).
        test_path: test split (parity texts).
        out_dir: models/onnx; the student's HF directory goes to out_dir/student.
        timer: times the steps (export, distill, student export); None: a fresh one.
        logits_cache: directory keeping the teacher's logits between runs (None: always compute them).

    Returns:
        {"variants": [Variant, ...] (requested ones, in params order, plus onnx_fp32), "distill": summary or None}.
    """
    from kit.optimize.runners import read_texts

    timer = timer or StepTimer("optimize")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise KitError(f"{model_dir}: no fine-tuned model (config.json missing); run the finetune stage first")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.onnx"):
        if is_kit_onnx(old):
            old.unlink()
    test_texts, _ = read_texts(test_path, label_column=None)
    int8 = {
        "per_channel": opt.int8_per_channel,
        "reduce_range": opt.int8_reduce_range,
        "weight_type": opt.int8_weight_type,
    }
    common = dict(
        parity_texts=test_texts[: opt.parity_rows],
        max_length=max_length,
        atol=opt.parity_atol,
        int8=int8,
        int8_base=opt.int8_base,
        opset=opt.opset,
        threads=opt.threads,
    )
    with timer.step("export"):
        teacher = load_classifier(model_dir)
        built = build_variants(model_dir, out_dir, "onnx", variant_kinds(opt.variants, "onnx"), model=teacher, **common)
    summary = None
    student_kinds = variant_kinds(opt.variants, "student")
    if student_kinds:
        from kit.optimize.distill import distill

        texts, labels = _distill_rows(opt, train_path)
        with timer.step("distill"):
            summary = distill(
                model_dir,
                out_dir / "student",
                texts,
                labels,
                layers=opt.student_layers,
                steps=opt.distill_steps,
                batch_size=opt.distill_batch_size,
                learning_rate=opt.distill_learning_rate,
                temperature=opt.distill_temperature,
                alpha=opt.distill_alpha,
                max_length=max_length,
                seed=opt.seed,
                threads=opt.threads,
                teacher_onnx=next(
                    p for p in (out_dir / "onnx_optimized.onnx", out_dir / "onnx_fp32.onnx") if p.is_file()
                ),
                teacher=teacher,
                logits_cache=logits_cache,
                sampling=opt.distill_sampling,
            )
        with timer.step("student export"):
            built += build_variants(out_dir / "student", out_dir, "student", student_kinds, **common)
    wanted = set(opt.variants) | {"onnx_fp32"}
    built = [v for v in built if v.name in wanted]
    rank = {n: i for i, n in enumerate(["onnx_fp32", *opt.variants])}
    built.sort(key=lambda v: rank[v.name])
    return {"variants": built, "distill": summary}


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
    # The pooled embedding as a second output (free: the graph computes it anyway), for the prediction log.
    pooled = add_named_pooled_output(m, onnx_path)
    with atomic_path(out_dir / "model.onnx", suffix=".onnx") as tmp:
        onnx.save(m, str(tmp))
    tok = load_tokenizer(tokenizer_json, max_length)
    with atomic_path(out_dir / "tokenizer.json", suffix=".json") as tmp:
        tok.save(str(tmp))
    write_labels(out_dir / "labels.json", labels)
    version = sha256_file(out_dir / "model.onnx", out_dir / "tokenizer.json", out_dir / "labels.json")[:12]
    serving = {
        "max_length": max_length,
        "padding": "longest",
        "truncation": True,
        "inputs": list(INPUT_NAMES),
        "input_dtype": "int64",
        "output": OUTPUT_NAME,
        "pooled_output": POOLED_NAME if pooled else None,
        "labels": list(labels),
        "variant": selection["variant"],
        "version": version,
    }
    write_json(out_dir / "serving.json", serving)
    record = {**selection, "version": version, "model_sha256": sha256_file(out_dir / "model.onnx")}
    write_json(out_dir / "selection.json", record)
    return record
