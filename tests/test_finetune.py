"""Tests for the finetune stage (kit/finetune) on a tiny BERT: model sources, label wiring, data errors, baseline, typed
report, quality gate, determinism, reproducible model files, SIGKILL/SIGTERM resume, DDP, cheap imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kit.core.errors import DataError, KitError, ParamsError, QualityGateError
from kit.core.io import read_labels
from kit.core.metrics import classification_metrics
from kit.core.params import ModelParams, load_params
from kit.core.reports import TrainReport, read_report
from kit.finetune import check_quality_gate, fit_baseline, load_model, load_splits, run_finetune, sample_rows
from kit.finetune.checkpoint import MARKER, find_resume_checkpoint
from kit.finetune.trainer import class_weights, training_order
from tests.fixtures_finetune import LABELS, make_project, synthetic_split

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
WEIGHTS = "models/finetune/model.safetensors"


def _log(proc_out: str) -> str:
    return proc_out.replace("\r", "\n")


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny run, in this process: (project root, report)."""
    root = make_project(tmp_path_factory.mktemp("reference"))
    report = run_finetune(load_params(root / "params.yaml"), root)
    return root, report


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before {path} appeared:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same run as `reference`, in subprocesses: SIGKILL after the first checkpoint, a fake half-written
    checkpoint planted, rerun, SIGTERM after the third checkpoint, rerun to the end. Returns what each step saw."""
    root = make_project(tmp_path_factory.mktemp("interrupted"))
    ckpts = root / "checkpoints" / "finetune"
    cmd = [sys.executable, "-m", "kit.finetune"]
    out: dict = {"root": root}

    p = subprocess.Popen(cmd, cwd=root, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(ckpts / "checkpoint-10" / MARKER, p)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    out["kill_rc"] = p.returncode
    # A checkpoint the kill cut short: directory there, no marker (as if killed while the Trainer wrote it).
    fake = ckpts / "checkpoint-55"
    fake.mkdir(parents=True)
    (fake / "model.safetensors").write_bytes(b"truncated")
    out["after_kill"] = sorted(p.name for p in ckpts.iterdir())

    p = subprocess.Popen(cmd, cwd=root, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(ckpts / "checkpoint-30" / MARKER, p)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out["term_log"] = _log(p.communicate()[0])
    out["term_exit_s"] = time.monotonic() - t0
    out["term_rc"] = p.returncode
    out["after_term"] = sorted(p.name for p in ckpts.iterdir())
    # What the SIGTERM checkpoint holds (the final rerun below removes checkpoints once it succeeds).
    out["term_checkpoints"] = {
        c.name: {"marker": json.loads((c / MARKER).read_text()), "state": json.loads((c / "trainer_state.json").read_text())}
        for c in ckpts.iterdir()
        if (c / MARKER).is_file()
    }

    # The last rerun in this process (transformers is imported already): the stage entry point is the same.
    out["final_report"] = run_finetune(load_params(root / "params.yaml"), root)
    return out


# ---------------------------------------------------------------------------------------- model sources
def test_tiny_model_has_label_map_and_eager_attention():
    model, tok = load_model(ModelParams(source="tiny"), LABELS, seed=1)
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert model.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert model.config.num_labels == 3 and model.config.hidden_size == 64
    assert model.config._attn_implementation == "eager"
    assert model.config.vocab_size == len(tok)
    again, _ = load_model(ModelParams(source="tiny"), LABELS, seed=1)  # seeded init: same weights
    assert all(np.array_equal(a.detach(), b.detach()) for a, b in zip(model.parameters(), again.parameters()))


def test_local_directory_source(tmp_path):
    model, tok = load_model(ModelParams(source="tiny"), LABELS, seed=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, _ = load_model(ModelParams(source="local", name=str(tmp_path / "m")), LABELS, seed=4)
    assert loaded.config.id2label[2] == "positive" and loaded.config._attn_implementation == "eager"
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert np.array_equal(a, b), name  # same labels: every weight, head included, comes from the directory
    with pytest.raises(KitError, match="model.name: .*nope is not a model directory"):
        load_model(ModelParams(source="local", name=str(tmp_path / "nope")), LABELS)


def test_embedded_model_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = load_model(ModelParams(source="embedded"), ["a", "b"], seed=0)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.config.id2label == {0: "a", 1: "b"} and model.classifier.out_features == 2
    assert model.config._attn_implementation == "eager"
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id


def test_hub_source_needs_a_name_and_says_when_offline(monkeypatch):
    with pytest.raises(ValueError, match="required when model.source is hub"):
        ModelParams(source="hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KitError, match=r"model.source 'hub': cannot load someone/not-cached \(offline\?"):
        load_model(ModelParams(source="hub", name="someone/not-cached"), LABELS)


# ------------------------------------------------------------------------------------------------- data
def test_data_errors_name_file_and_column(tmp_path):
    with pytest.raises(DataError, match="labels.json: not found"):
        read_labels(tmp_path / "labels.json", DataError)
    (tmp_path / "labels.json").write_text('{"labels": "negative"}')
    with pytest.raises(DataError, match=r'labels.json: expected \{"labels": \[at least two strings'):
        read_labels(tmp_path / "labels.json", DataError)
    df = synthetic_split(20, seed=0)
    for split in ("train", "validation", "test"):
        df.to_parquet(tmp_path / f"{split}.parquet")
    assert len(load_splits(tmp_path, LABELS)["test"]) == 20
    df.drop(columns="text").to_parquet(tmp_path / "validation.parquet")
    with pytest.raises(DataError, match=r"validation.parquet: missing column\(s\) text"):
        load_splits(tmp_path, LABELS)
    df.assign(label_id=df["label_id"] + 5).to_parquet(tmp_path / "validation.parquet")
    with pytest.raises(DataError, match=r"validation.parquet: column label_id has 20 value\(s\) outside 0..2"):
        load_splits(tmp_path, LABELS)


def test_sample_rows_is_deterministic():
    df = synthetic_split(100, seed=0)
    a, b = sample_rows(df, 30, seed=7), sample_rows(df, 30, seed=7)
    assert len(a) == 30 and a.equals(b) and not a.equals(sample_rows(df, 30, seed=8))
    assert sample_rows(df, None, 7) is df and sample_rows(df, 1000, 7) is df


def test_length_grouped_order_pads_little_and_has_no_length_sawtooth():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 65, size=1000).tolist()
    bs = 16
    order = training_order(lengths, bs, seed=3, group_by_length=True)
    assert sorted(order) == list(range(1000))
    assert order == training_order(lengths, bs, seed=3, group_by_length=True)  # a function of the seed alone
    assert order != training_order(lengths, bs, seed=4, group_by_length=True)
    batches = [order[i : i + bs] for i in range(0, 1000, bs)]
    assert len(batches[-1]) == 1000 % bs  # the short batch stays last, so every other slice is a whole batch

    def padded(bs_order: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in bs_order)

    rand = training_order(lengths, bs, seed=3, group_by_length=False)
    waste_grouped = padded(batches) / sum(lengths) - 1
    waste_random = padded([rand[i : i + bs] for i in range(0, 1000, bs)]) / sum(lengths) - 1
    assert waste_grouped < 0.1 < 0.5 < waste_random
    # transformers' own grouping runs each mega-batch from its longest batch to its shortest; shuffled batches must
    # not: the longest-token count of consecutive batches rises about as often as it falls.
    tops = [max(lengths[i] for i in b) for b in batches[:-1]]
    falls = sum(a > b for a, b in zip(tops, tops[1:]))
    assert 0.3 < falls / (len(tops) - 1) < 0.7


def test_balanced_class_weights_match_sklearn_and_refuse_an_empty_class():
    from sklearn.utils.class_weight import compute_class_weight

    ids = np.array([0, 0, 0, 1, 2, 2])
    assert class_weights(ids, 3) == pytest.approx(compute_class_weight("balanced", classes=np.arange(3), y=ids))
    with pytest.raises(DataError, match=r"no rows of class id\(s\) \[1\]"):
        class_weights(np.array([0, 2, 2]), 3)


def test_balanced_loss_is_the_class_weighted_cross_entropy(tmp_path):
    import torch
    from transformers import TrainingArguments

    from kit.finetune.trainer import trainer_classes

    model, tok = load_model(ModelParams(source="tiny", max_length=32), LABELS)
    model.eval()  # no dropout: the two forward passes below must agree
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    weights = [0.5, 1.0, 3.0]
    trainer = trainer_classes()[0](model=model, args=args, class_weights=weights)
    enc = dict(tok(["good day", "bad day", "meh", "fine"], padding=True, return_tensors="pt"))
    labels = torch.tensor([0, 1, 2, 2])
    loss = trainer.compute_loss(model, {**enc, "labels": labels})
    with torch.no_grad():
        logits = model(**enc).logits
    ce = torch.nn.functional.cross_entropy
    assert loss.item() == pytest.approx(ce(logits, labels, weight=torch.tensor(weights)).item(), rel=1e-5)
    assert loss.item() != pytest.approx(ce(logits, labels).item(), rel=1e-3)


def test_train_params_checked(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("finetune:\n  eval_steps: 30\n  save_steps: 50\n")
    with pytest.raises(ParamsError, match=r"finetune.save_steps: must be a multiple of finetune.eval_steps \(30\), got 50"):
        load_params(path)
    path.write_text("finetune:\n  max_steps: 0\n")
    with pytest.raises(ParamsError, match="finetune.max_steps: must be -1"):
        load_params(path)


# --------------------------------------------------------------------------------------------- baseline
def test_classification_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["negative"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["neutral"]["precision"] == 0.5 and m["per_class"]["neutral"]["recall"] == 1.0
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_baseline_learns_the_synthetic_task():
    out = fit_baseline(synthetic_split(300, seed=1), synthetic_split(150, seed=2), LABELS)
    assert out["macro_f1"] > 0.85 and set(out["per_class"]) == set(LABELS) and out["fit_time_s"] >= 0


# ----------------------------------------------------------------------------------------- checkpoints
def test_find_resume_checkpoint_rules(tmp_path):
    def ckpt(step: int, fingerprint: str | None, state: bool = True) -> Path:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if state:
            (d / "trainer_state.json").write_text("{}")
        if fingerprint:
            (d / MARKER).write_text(json.dumps({"fingerprint": fingerprint, "step": step}))
        return d

    ckpt(10, "abc"), ckpt(20, "abc"), ckpt(30, None), ckpt(40, "abc", state=False)
    said: list[str] = []
    assert find_resume_checkpoint(tmp_path, "abc", log=said.append) == tmp_path / "checkpoint-20"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20"]
    assert any("half-written checkpoint" in s and "checkpoint-30" in s for s in said)
    said.clear()
    assert find_resume_checkpoint(tmp_path, "other", log=said.append) is None
    assert any("other params or data" in s for s in said) and any("starting fresh" in s for s in said)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- training
# What train.json held before it became a TrainReport: the file keeps exactly these keys (plus schema_version, stage).
TRAIN_JSON_KEYS = {
    "labels", "data", "model", "baseline", "macro_f1_gain", "train", "gate", "outputs", "schema_version", "stage",
}
TRAIN_KEYS = {
    "base_model", "steps", "max_steps", "epochs", "stopped_early", "best_step", "best_val_macro_f1", "val_evaluations",
    "resumed_from_step", "train_time_s", "train_samples_per_s", "test_time_s", "test_samples_per_s", "processes",
    "threads_per_process", "fingerprint", "stage_time_s", "checkpoint_write_s",
}


def test_reference_run_outputs(reference):
    root, report = reference
    model_dir = root / "models" / "finetune"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "labels.json"):
        assert (model_dir / name).is_file(), name
    assert read_labels(model_dir / "labels.json") == LABELS
    assert json.loads((model_dir / "config.json").read_text())["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    written = read_report(root / "reports" / "train.json", TrainReport)
    assert written.stage == "finetune"
    assert written.model.macro_f1 == report.model.macro_f1 > 0.8  # the tiny model learned the task
    assert set(written.model.per_class) == set(LABELS) and set(written.baseline.per_class) == set(LABELS)
    assert written.data.test_rows == 150 and written.data.train_rows == 200
    assert written.train.steps == 60 and written.train.resumed_from_step is None
    assert written.train.train_samples_per_s > 0 and written.gate.passed
    assert 0 < written.train.checkpoint_write_s < written.train.train_time_s  # median of the 6 timed saves
    assert written.macro_f1_gain == pytest.approx(written.model.macro_f1 - written.baseline.macro_f1, abs=1e-4)
    assert written.outputs == {"model_dir": "models/finetune"}
    # history and confusion come back to the caller but stay out of the file.
    assert [h["step"] for h in report.history if "eval_macro_f1" in h] == [10, 20, 30, 40, 50, 60]
    assert list(report.confusion) == ["fine-tuned", "TF-IDF + LR baseline"]
    assert sum(map(sum, report.confusion["fine-tuned"])) == 150
    raw = json.loads((root / "reports" / "train.json").read_text())
    assert set(raw) == TRAIN_JSON_KEYS and set(raw["train"]) == TRAIN_KEYS and raw["stage"] == "finetune"
    for png in ("train_curves.png", "train_confusion.png"):
        assert (root / "reports" / "plots" / png).stat().st_size > 1000
    card = (root / "reports" / "model_card.md").read_text()
    assert f"{written.model.macro_f1:.3f}" in card and "TF-IDF" in card and "## Limits" in card
    assert "`models/finetune/`" in card
    tsv = (root / "reports" / "train_live" / "plots" / "metrics" / "eval" / "macro_f1.tsv").read_text().split()
    assert tsv[:2] == ["step", "macro_f1"] and tsv[2::2] == ["10", "20", "30", "40", "50", "60"]
    assert not (root / "reports" / "train_live" / "dvc.yaml").exists()  # DVCLive leaves dvc.yaml to the pipeline
    assert not list((root / "checkpoints" / "finetune").glob("checkpoint-*"))  # removed after success


def test_reports_and_model_files_hold_no_machine_path(reference):
    root, _ = reference
    files = [root / "reports" / "train.json", root / "reports" / "model_card.md",
             *sorted((root / "models" / "finetune").glob("*.json"))]
    for path in files:
        text = path.read_text()
        assert str(root) not in text and str(root.resolve()) not in text, path
        assert "site-packages" not in text and "/tmp/" not in text, path


def test_outputs_stay_relative_when_the_cli_passes_absolute_dirs(reference, tmp_path, monkeypatch):
    from kit.finetune.commands import finetune

    root = make_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    finetune(params_file=Path("params.yaml"), data_dir=Path("data"), model_dir=Path("out/model"),
             reports_dir=Path("out/reports"))
    report = read_report(root / "out" / "reports" / "train.json", TrainReport)
    assert report.outputs == {"model_dir": "out/model"}
    assert "`out/model/`" in (root / "out" / "reports" / "model_card.md").read_text()
    assert (root / "out" / "model" / "model.safetensors").read_bytes() == (reference[0] / WEIGHTS).read_bytes()


_SAVE_TINY = """
import sys
from pathlib import Path
from kit.core.params import ModelParams
from kit.finetune import load_model, save_model_dir
model, tok = load_model(ModelParams(source="tiny"), ["negative", "neutral", "positive"], seed=5)
save_model_dir(model, tok, ["negative", "neutral", "positive"], Path(sys.argv[1]))
"""


def test_model_dir_is_the_same_bytes_with_and_without_hf_hub_offline(tmp_path):
    offline = {**ENV, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    online = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    for name, env in (("offline", offline), ("online", online)):
        r = subprocess.run([sys.executable, "-c", _SAVE_TINY, str(tmp_path / name)], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "offline").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "online").iterdir()) and "tokenizer_config.json" in files
    for name in files:
        assert (tmp_path / "offline" / name).read_bytes() == (tmp_path / "online" / name).read_bytes(), name
    for path in (tmp_path / "offline").glob("*.json"):
        text = path.read_text()
        assert str(tmp_path) not in text and "site-packages" not in text, path
        assert not any(isinstance(v, str) and v.startswith("/") for v in json.loads(text).values()), path
    tok_config = json.loads((tmp_path / "offline" / "tokenizer_config.json").read_text())
    assert "local_files_only" not in tok_config and "is_local" not in tok_config
    assert tok_config["tokenizer_class"] == "BertTokenizer"  # the rest is as transformers wrote it


def test_saved_model_dir_loads_back(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kit.finetune import save_model_dir

    model, tok = load_model(ModelParams(source="tiny"), LABELS, seed=2)
    save_model_dir(model, tok, LABELS, tmp_path / "m")
    again = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert again("good day")["input_ids"] == tok("good day")["input_ids"]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    assert loaded.config.id2label[1] == "neutral"


def test_importing_the_cli_command_and_core_metrics_stays_light():
    code = ("import sys, kit.finetune, kit.finetune.commands, kit.data, kit.core.metrics; "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'pandas') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_quality_gate_fails_but_writes_model_and_rerun_is_bitwise_identical(reference, tmp_path):
    root = make_project(tmp_path, train={"min_macro_f1": 0.99})
    gate = r"test macro-F1 0\.\d+ < finetune.min_macro_f1 0.9900 \(baseline 0\.\d+\); the model was still written to "
    with pytest.raises(QualityGateError, match=gate + "models/finetune for inspection"):
        run_finetune(load_params(root / "params.yaml"), root)
    assert read_report(root / "reports" / "train.json", TrainReport).gate.passed is False
    # Determinism: an independent fresh run with the same params and data gives the same bytes.
    assert (root / WEIGHTS).read_bytes() == (reference[0] / WEIGHTS).read_bytes()


def test_gate_relative_to_the_baseline_names_both_figures_and_the_param(reference):
    report = read_report(reference[0] / "reports" / "train.json", TrainReport)
    gain = 100 * report.macro_f1_gain
    assert report.gate.min_gain_over_baseline == -100.0 and report.gate.passed
    check_quality_gate(report, 0.0, gain - 0.5)  # beats the baseline by more than asked: passes
    with pytest.raises(QualityGateError, match=r"beats the TF-IDF baseline \(0\.\d{4}\) by [-+]\d+\.\d\d points < "
                       r"finetune.min_gain_over_baseline [-+]\d+\.\d\d; the model was still written to models/finetune"):
        check_quality_gate(report, 0.0, gain + 0.5)
    check_quality_gate(report, 0.0, None)  # no baseline gate asked


def test_sigkill_run_resumes_instead_of_restarting(interrupted):
    assert interrupted["kill_rc"] == -signal.SIGKILL
    assert "checkpoint-10" in interrupted["after_kill"]
    log = interrupted["term_log"]
    assert "ignoring half-written checkpoint" in log and "checkpoint-55" in log
    assert "resuming from" in log and "starting fresh" not in log
    resumed = int(log.split("resuming from ")[1].split("checkpoint-")[1].split()[0])
    assert resumed >= 10 and "checkpoint-55" not in interrupted["after_term"]


def test_sigterm_writes_checkpoint_and_exits_nonzero(interrupted):
    assert interrupted["term_rc"] == 143, interrupted["term_log"][-2000:]
    step = int(interrupted["term_log"].split("interrupted by SIGTERM at step ")[1].split(";")[0])
    assert step >= 30 and f"checkpoint-{step}" in interrupted["after_term"]
    ckpt = interrupted["term_checkpoints"][f"checkpoint-{step}"]  # complete: marker written last
    assert ckpt["marker"]["step"] == step and ckpt["state"]["global_step"] == step
    assert interrupted["term_exit_s"] < 60  # a grace period, not a benchmark


def test_interrupted_and_resumed_run_equals_uninterrupted(interrupted, reference):
    root = interrupted["root"]
    assert interrupted["final_report"].train.resumed_from_step >= 30
    report = json.loads((root / "reports" / "train.json").read_text())
    assert report["train"]["resumed_from_step"] >= 30 and report["train"]["steps"] == 60
    assert (root / WEIGHTS).read_bytes() == (reference[0] / WEIGHTS).read_bytes()
    # DVCLive curves are rebuilt from the checkpoint's history: same steps as the uninterrupted run.
    tsv = root / "reports" / "train_live" / "plots" / "metrics" / "eval" / "macro_f1.tsv"
    ref_tsv = reference[0] / "reports" / "train_live" / "plots" / "metrics" / "eval" / "macro_f1.tsv"
    assert tsv.read_text() == ref_tsv.read_text()


def test_torchrun_two_processes(reference, tmp_path):
    root = make_project(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "kit.finetune"]
    r = subprocess.run(cmd, cwd=root, env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, _log(r.stdout + r.stderr)[-3000:]
    report = json.loads((root / "reports" / "train.json").read_text())
    assert report["train"]["processes"] == 2 and report["train"]["steps"] == 60
    # Same global batch (8 per process), same schedule: a model of the same quality.
    assert report["model"]["macro_f1"] >= reference[1].model.macro_f1 - 0.05
    assert _log(r.stdout).count("finetune done") == 1  # only rank 0 reports and writes
    assert (root / WEIGHTS).is_file()
