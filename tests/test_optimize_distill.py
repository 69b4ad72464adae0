"""kit/optimize/distill.py: the student keeps the chosen teacher layers, trains by distillation, and is deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from kit.core.errors import KitError
from kit.optimize.distill import distill, make_student
from kit.optimize.export import load_classifier
from tests.fixtures_optimize import TEXTS, tiny_data, tiny_model  # noqa: F401


def test_make_student_copies_chosen_layers(tiny_model):  # noqa: F811
    teacher = load_classifier(tiny_model)
    student = make_student(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t, s = teacher.state_dict(), student.state_dict()
    for j, i in enumerate([1, 3]):
        key = "attention.self.query.weight"
        assert torch.equal(s[f"bert.encoder.layer.{j}.{key}"], t[f"bert.encoder.layer.{i}.{key}"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    for bad in ([], [0, 4], [1, 1]):
        with pytest.raises(KitError, match="student_layers"):
            make_student(teacher, bad)


def test_distill_trains_saves_and_is_deterministic(tiny_model, tiny_data, tmp_path):  # noqa: F811
    train = pd.read_parquet(tiny_data / "train.parquet")
    kw = dict(layers=[0, 2], steps=4, batch_size=8, learning_rate=1e-3, temperature=2.0, alpha=0.5, max_length=16,
              seed=3, threads=1)
    cache = tmp_path / "teacher_logits"
    s1 = distill(tiny_model, tmp_path / "a", train.text.tolist(), train.label_id.to_numpy(), logits_cache=cache, **kw)
    # The second run reads the teacher's logits the first one stored, and trains the very same student.
    s2 = distill(tiny_model, tmp_path / "b", train.text.tolist(), train.label_id.to_numpy(), logits_cache=cache, **kw)
    assert (s1["teacher_logits_cached"], s2["teacher_logits_cached"]) == (False, True)
    assert s1["layers"] == [0, 2] and s1["steps"] == 4 and s1["rows"] == len(train)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "labels.json", "distill.json"):
        assert (tmp_path / "a" / name).is_file()
    assert not (tmp_path / "a" / "_trainer").exists()
    student = load_classifier(tmp_path / "a")
    assert student.config.num_hidden_layers == 2
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # Length-grouped batches reach the Trainer: other rows share each step, so another student.
    s3 = distill(tiny_model, tmp_path / "c", train.text.tolist(), train.label_id.to_numpy(), logits_cache=cache,
                 sampling="group_by_length", **kw)  # fmt: skip
    wc = load_file(tmp_path / "c" / "model.safetensors")
    assert s3["sampling"] == "group_by_length" and not all(torch.equal(wa[k], wc[k]) for k in wa)
    # It trained: the student's weights moved away from the teacher layers it started from.
    t = load_file(tiny_model / "model.safetensors")
    assert not torch.equal(wa["bert.encoder.layer.1.attention.self.query.weight"],
                           t["bert.encoder.layer.2.attention.self.query.weight"])


def test_teacher_logits_from_onnx_match_pytorch(tiny_model, tmp_path):  # noqa: F811
    from kit.optimize.export import export_onnx, torch_logits
    from kit.optimize.teacher import teacher_logits
    from kit.serve.model import encode, load_tokenizer

    teacher = load_classifier(tiny_model)
    tok = load_tokenizer(tiny_model / "tokenizer.json", 16)
    path = export_onnx(teacher, tmp_path / "t.onnx")
    a = teacher_logits(teacher, tok, TEXTS, batch_size=3)
    b = teacher_logits(teacher, tok, TEXTS, batch_size=3, onnx_path=path, threads=1)
    assert a.shape == (len(TEXTS), 3)
    assert abs(a - b).max() < 1e-4
    # Sorted, per-batch padding gives each text the logits it gets alone (the serving tokenizer, truncated at 16).
    alone = np.concatenate([torch_logits(teacher, encode(tok, [t])) for t in TEXTS])
    np.testing.assert_allclose(a, alone, atol=1e-4)
    # Tokenised once with the serving tokenizer: the ids the HF tokenizer gives the Trainer, row for row.
    from transformers import AutoTokenizer

    from kit.optimize.teacher import tokenise

    rows, hf = tokenise(tok, TEXTS), AutoTokenizer.from_pretrained(str(tiny_model))(TEXTS, truncation=True, max_length=16)
    assert rows["input_ids"] == hf["input_ids"] and rows["token_type_ids"] == hf["token_type_ids"]


def test_cached_logits_are_keyed_by_teacher_rows_and_length(tiny_model, tmp_path):  # noqa: F811
    from kit.optimize.teacher import cached_logits, logits_key

    key = logits_key(tiny_model, TEXTS, 16)
    assert logits_key(tiny_model, TEXTS, 32) != key and logits_key(tiny_model, TEXTS[:-1], 16) != key
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_model.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    assert logits_key(other, TEXTS, 16) == key  # the same files elsewhere: the same teacher
    weights = other / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert logits_key(other, TEXTS, 16) != key  # retrained weights: another teacher

    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    got, hit = cached_logits(tmp_path / "c", key, lambda: first)
    assert not hit and np.array_equal(got, first)

    def must_not_run() -> np.ndarray:
        raise AssertionError("recomputed although cached")

    got, hit = cached_logits(tmp_path / "c", key, must_not_run)
    assert hit and np.array_equal(got, first)
    got, hit = cached_logits(tmp_path / "c", "another key", lambda: first + 1)
    assert not hit and np.array_equal(got, first + 1)
