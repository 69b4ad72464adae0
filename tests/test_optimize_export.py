"""kit/optimize/export.py, metadata.py and variants.py: ONNX export contract, parity check (and its failure on a
corrupted file), the cheap metadata reader, variants, selection, the serving directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kit.core.errors import KitError, ParamsError, ParityError
from kit.core.io import read_labels
from kit.optimize.export import check_parity, export_onnx, load_classifier, model_spec, torch_logits
from kit.optimize.metadata import ModelSpec, is_kit_onnx, read_onnx_metadata
from kit.optimize.variants import build_variants, select_variant, write_serving
from kit.serve.model import INPUT_NAMES, encode, load_tokenizer, make_session, session_logits
from tests.fixtures_optimize import LABELS, TEXTS, tiny_data, tiny_model  # noqa: F401

INT8 = {"per_channel": True, "reduce_range": True, "weight_type": "qint8"}


@pytest.fixture(scope="module")
def variants(tiny_model, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("onnx")
    return {v.name: v for v in build_variants(tiny_model, out, "onnx", ["optimized", "int8"], TEXTS, 32, 1e-4, INT8)}


def test_export_has_the_serving_contract_and_dynamic_axes(variants, tiny_model):  # noqa: F811
    sess = make_session(variants["onnx_fp32"].path, threads=1)
    assert [(i.name, i.type) for i in sess.get_inputs()] == [(n, "tensor(int64)") for n in INPUT_NAMES]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    tok = load_tokenizer(tiny_model / "tokenizer.json", 32)
    model = load_classifier(tiny_model)
    for texts, pad_to in ((TEXTS[:3], 7), (TEXTS[:1], 20), (TEXTS, None)):
        batch = encode(tok, texts, pad_to=pad_to)
        got = session_logits(sess, batch)
        assert got.shape == (len(texts), 3)
        np.testing.assert_allclose(got, torch_logits(model, batch), atol=1e-4)


def test_variants_record_sizes_parity_and_fusion(variants):
    fp32, opt, q = variants["onnx_fp32"], variants["onnx_optimized"], variants["onnx_int8"]
    for v in (fp32, opt, q):
        assert v.path.is_file() and v.size_bytes == v.path.stat().st_size
    assert fp32.parity_max_diff < 1e-4 and opt.parity_max_diff < 1e-4
    assert q.size_bytes < 0.6 * fp32.size_bytes  # int8 weights
    assert "Attention" in opt.notes[0]  # the eager-attention export fuses
    props = {p.key: p.value for p in onnx.load(str(q.path)).metadata_props}
    assert ModelSpec.from_metadata(props) == ModelSpec(4, 32, 64, 2, 3)
    # The cheap reader (framing only, weights skipped) sees exactly what onnx.load parses.
    assert all(read_onnx_metadata(v.path) == {p.key: p.value for p in onnx.load(str(v.path)).metadata_props}
               for v in (fp32, opt, q))
    assert props["kit.kind"] == "int8" and all(is_kit_onnx(v.path) for v in (fp32, opt, q))


def test_parity_check_fails_on_corrupted_onnx_with_max_difference(tiny_model, tmp_path):  # noqa: F811
    model = load_classifier(tiny_model)
    path = export_onnx(model, tmp_path / "m.onnx")
    m = onnx.load(str(path))
    init = next(i for i in m.graph.initializer if "classifier.weight" in i.name or i.name.endswith("weight")
                and len(i.dims) == 2 and i.dims[0] == 3)
    w = numpy_helper.to_array(init).copy()
    w += 0.5  # a perturbed classifier: logits shift by ~0.5 x sum of pooled activations
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "corrupt.onnx"
    onnx.save(m, str(bad))
    batch = encode(load_tokenizer(tiny_model / "tokenizer.json", 32), TEXTS)
    assert check_parity(model, path, batch, atol=1e-4) < 1e-4
    with pytest.raises(ParityError, match=r"differ from PyTorch by up to [0-9.e+-]+ \(tolerance 0\.0001\)") as err:
        check_parity(model, bad, batch, atol=1e-4)
    assert err.value.max_diff > 1e-2 and err.value.path == bad


def test_flops_formula():
    spec = ModelSpec(num_layers=1, hidden_size=4, intermediate_size=8, num_heads=2, num_labels=3)
    # per layer: b*s*(4*16 + 2*4*8) + 2*b*s*s*h ; head: b*(16 + 12); x2 FLOPs per MAC
    assert spec.flops(2, 5) == 2 * (2 * 5 * (64 + 64) + 2 * 2 * 25 * 4 + 2 * 28)


def test_select_variant_picks_fastest_within_budget_else_fp32():
    rows = [
        {"variant": "a", "speedup": 5.0, "macro_f1": 0.70},
        {"variant": "b", "speedup": 3.0, "macro_f1": 0.795},
        {"variant": "c", "speedup": 2.0, "macro_f1": 0.80},
    ]
    sel = select_variant([dict(r) for r in rows], reference_f1=0.80, max_f1_drop=0.01, fallback="onnx_fp32")
    assert sel["variant"] == "b" and sel["qualified"] and "faster but over budget: a" in sel["reason"]
    sel = select_variant([dict(r) for r in rows[:1]], reference_f1=0.80, max_f1_drop=0.01, fallback="onnx_fp32")
    assert sel["variant"] == "onnx_fp32" and not sel["qualified"] and "fp32" in sel["reason"]


def test_write_serving_directory(variants, tiny_model, tmp_path):  # noqa: F811
    from tokenizers import Tokenizer

    sel = {"variant": "onnx_int8", "reason": "test", "qualified": True, "candidates": []}
    out = tmp_path / "serving"
    rec = write_serving(variants["onnx_int8"].path, tiny_model / "tokenizer.json", read_labels(tiny_model / "labels.json"), 16, sel, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.json", "model.onnx", "selection.json", "serving.json", "tokenizer.json"
    ]
    assert json.loads((out / "labels.json").read_text()) == {"labels": LABELS}
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # readable by a non-root server user
    serving = json.loads((out / "serving.json").read_text())
    assert serving["max_length"] == 16 and serving["version"] == rec["version"] == json.loads(
        (out / "selection.json").read_text()
    )["version"]
    # The server uses only `tokenizers`: truncation and padding must come from the file itself.
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    encs = tok.encode_batch(["short", " ".join(["word"] * 50)])
    assert len(encs[0].ids) == len(encs[1].ids) == 16
    # Same content, same version; a different model, a different version.
    rec2 = write_serving(variants["onnx_int8"].path, tiny_model / "tokenizer.json", LABELS, 16, sel, out)
    assert rec2["version"] == rec["version"]
    rec3 = write_serving(variants["onnx_fp32"].path, tiny_model / "tokenizer.json", LABELS, 16, sel, out)
    assert rec3["version"] != rec["version"]
    with pytest.raises(KitError, match="3 logits but 2 labels"):
        write_serving(variants["onnx_fp32"].path, tiny_model / "tokenizer.json", LABELS[:2], 16, sel, tmp_path / "x")


def test_model_spec_and_labels(tiny_model):  # noqa: F811
    assert model_spec(load_classifier(tiny_model)) == ModelSpec(4, 32, 64, 2, 3)
    assert read_labels(tiny_model / "labels.json") == LABELS


def test_optimize_params_reject_unknown_variant(tmp_path: Path):
    from kit.core.params import load_params

    p = tmp_path / "params.yaml"
    p.write_text("optimize:\n  variants: [onnx_fp32, onnx_int4]\n")
    with pytest.raises(ParamsError, match=r"optimize.variants: unknown variant\(s\) \['onnx_int4'\]"):
        load_params(p)
