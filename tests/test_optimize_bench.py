"""kit/optimize/bench.py, machine.py, runners.py, figures.py and `kit bench`: interleaved benchmark structure,
accuracy, peak derivation, errors, CLI on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kit.core.errors import DataError, KitError
from kit.optimize.bench import benchmark, evaluate
from kit.optimize.figures import headline, selection_rows
from kit.optimize.machine import machine_peak
from kit.optimize.runners import Runner, load_runner, read_texts
from kit.optimize.variants import build_variants
from kit.serve.model import load_tokenizer
from tests.fixtures_optimize import TEXTS, tiny_data, tiny_model  # noqa: F401

INT8 = {"per_channel": False, "reduce_range": True, "weight_type": "qint8"}


@pytest.fixture(scope="module")
def onnx_files(tiny_model, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("bench_onnx")
    return {v.name: v.path for v in build_variants(tiny_model, out, "onnx", ["int8"], TEXTS, 32, 1e-4, INT8)}


def test_benchmark_interleaved_results(tiny_model, onnx_files, tiny_data):  # noqa: F811
    runners = [load_runner(tiny_model, 1, "pytorch_fp32")] + [load_runner(p, 1, n) for n, p in onnx_files.items()]
    texts, labels = read_texts(tiny_data / "test.parquet")
    tok = load_tokenizer(tiny_model / "tokenizer.json", 32)
    # At most 3 rounds, but any spread is small enough here: it stops after the 2 it must run.
    b = benchmark(runners, tok, texts, [1, 4], [16], warmup=1, repeats=3, rounds=3, min_rounds=2, ratio_spread=1e9,
                  threads=1, progress=False, measure_peak=False)
    assert (b["settings"]["rounds"], b["settings"]["max_rounds"]) == (2, 3) and b["settings"]["ratio_spread"] >= 0
    assert b["reference"] == "pytorch_fp32"
    assert len(b["results"]) == 3 * 2
    for r in b["results"]:
        lat = r["latency_ms"]
        assert r["samples"] == 6 and len(r["speedup_per_round"]) == 2
        assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"]
        assert r["throughput_seq_s"] == pytest.approx(r["batch_size"] / lat["p50"] * 1000)
        assert r["gflop_per_forward"] > 0 and r["gflops"] > 0
        if r["variant"] == "pytorch_fp32":
            assert r["speedup"] == 1.0
    assert b["machine"]["theoretical_derivation"]

    acc = evaluate(runners, tok, texts, labels, batch_size=5, progress=False)
    assert acc["pytorch_fp32"]["agreement"] == 1.0 and acc["onnx_fp32"]["agreement"] == 1.0
    assert acc["onnx_fp32"]["macro_f1"] == acc["pytorch_fp32"]["macro_f1"]
    rows = selection_rows(b, acc)
    assert {r["variant"] for r in rows} == {"onnx_fp32", "onnx_int8"}
    h = headline(b, acc, "onnx_int8")
    assert (h.throughput_batch_size, h.latency_batch_size, h.seq_len) == (4, 1, 16)
    int8 = {(r["batch_size"]): r for r in b["results"] if r["variant"] == "onnx_int8"}
    assert h.throughput_ratio == int8[4]["speedup"] and h.latency_ratio == int8[1]["speedup"]
    assert h.p50_latency_ms == int8[1]["latency_ms"]["p50"] and h.throughput_seq_s == int8[4]["throughput_seq_s"]
    assert h.macro_f1_drop_points == pytest.approx(100 * (acc["pytorch_fp32"]["macro_f1"] - acc["onnx_int8"]["macro_f1"]))


def test_machine_peak_is_derived_and_measured():
    p = machine_peak(1)
    assert p["measured_gflops"] > 0 and "matmul" in p["measured_derivation"]
    if p["theoretical_gflops"]:
        assert p["theoretical_gflops"] >= p["measured_gflops"] * 0.5
        assert "FLOPs/cycle" in p["theoretical_derivation"]


def test_errors_name_the_problem(tmp_path, tiny_data):  # noqa: F811
    with pytest.raises(KitError, match="not an .onnx file"):
        load_runner(tmp_path, 1)
    with pytest.raises(DataError, match="no column 'body'"):
        read_texts(tiny_data / "test.parquet", text_column="body")
    with pytest.raises(DataError, match="file not found"):
        read_texts(tmp_path / "missing.parquet")


def test_kit_bench_cli_on_any_models(tiny_model, onnx_files, tiny_data, tmp_path):  # noqa: F811
    from kit.cli import app

    out = tmp_path / "bench.json"
    args = ["bench", str(tiny_model), str(onnx_files["onnx_int8"]), "--batch-sizes", "1,2", "--seq-len", "8",
            "--threads", "1", "--texts", str(tiny_data / "test.parquet"), "--out", str(out), "--warmup", "0",
            "--repeats", "2", "--rounds", "1", "--tokenizer", str(tiny_model / "tokenizer.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert [m["name"] for m in report["models"]] == ["pytorch_model", "onnx_int8"]
    assert len(report["benchmark"]["results"]) == 4
    assert set(report["accuracy"]) == {"pytorch_model", "onnx_int8"}
    assert "p50 ms" in res.output

    bad = CliRunner().invoke(app, ["bench", str(tmp_path), "--texts", str(tiny_data / "test.parquet"),
                                   "--out", str(tmp_path / "x.json")])
    assert bad.exit_code == 1 and "tokenizer.json" in bad.output
    bad = CliRunner().invoke(app, ["bench", str(tiny_model), "--batch-sizes", "1,x"])
    assert bad.exit_code != 0


def _fake_runner(name: str, kind: str = "onnx") -> Runner:
    return Runner(name, kind, Path(name), None, 0, 0.0, lambda b: np.zeros((len(b["input_ids"]), 3), np.float32))


def test_rounds_stop_when_ratios_agree_and_never_pass_the_most(tiny_model):  # noqa: F811
    tok = load_tokenizer(tiny_model / "tokenizer.json", 32)
    runners = [_fake_runner("ref", "pytorch"), _fake_runner("a")]
    kw = dict(warmup=0, repeats=2, threads=1, progress=False, measure_peak=False)
    fixed = benchmark(runners, tok, TEXTS, [1], [8], rounds=4, min_rounds=2, ratio_spread=None, **kw)
    assert fixed["settings"]["rounds"] == 4 and len(fixed["results"][1]["speedup_per_round"]) == 4
    early = benchmark(runners, tok, TEXTS, [1], [8], rounds=4, min_rounds=2, ratio_spread=1e9, **kw)
    assert early["settings"]["rounds"] == 2 and len(early["rounds"]["a|b1|s8"]) == 2
    capped = benchmark(runners, tok, TEXTS, [1], [8], rounds=1, min_rounds=3, ratio_spread=1e9, **kw)
    assert (capped["settings"]["rounds"], capped["settings"]["min_rounds"]) == (1, 1)


def test_onnx_runners_spin_only_when_asked(onnx_files, monkeypatch):
    import kit.optimize.runners as runners_module

    seen: list[str] = []
    real = runners_module.make_session

    def spy(*args, **kwargs):
        sess = real(*args, **kwargs)
        seen.append(sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning"))
        return sess

    monkeypatch.setattr(runners_module, "make_session", spy)
    path = onnx_files["onnx_int8"]
    for spinning in (True, False):
        assert load_runner(path, 1, spinning=spinning).kind == "onnx"
    assert load_runner(path, 1).kind == "onnx"  # the library call's default: no spinning
    assert seen == ["1", "0", "0"]


def test_every_turn_settles_before_its_warm_up(tiny_model, monkeypatch):  # noqa: F811
    import kit.optimize.bench as bench_module

    tok = load_tokenizer(tiny_model / "tokenizer.json", 32)
    calls: list[tuple[str, object]] = []
    runners = [_fake_runner(n, k) for n, k in (("ref", "pytorch"), ("a", "onnx"))]
    for r in runners:
        inner = r.fn
        r.fn = lambda b, _n=r.name, _f=inner: (calls.append(("run", _n)), _f(b))[1]
    real_sleep = bench_module.time.sleep
    monkeypatch.setattr(bench_module.time, "sleep", lambda s: (calls.append(("sleep", s)), real_sleep(s))[1])
    out = benchmark(runners, tok, TEXTS, [1, 2], [8], warmup=1, repeats=2, rounds=2, threads=1, progress=False,
                    measure_peak=False, settle_s=0.003)  # fmt: skip
    assert out["settings"]["settle_s"] == 0.003
    turns = [i for i, c in enumerate(calls) if c == ("sleep", 0.003)]
    assert len(turns) == 2 * 2 * 2  # rounds x batch sizes x runners
    for i in turns:  # each pause is followed by one runner's 1 warm-up + 2 timed calls
        assert [c[0] for c in calls[i + 1 : i + 4]] == ["run"] * 3 and len({c[1] for c in calls[i + 1 : i + 4]}) == 1


def test_short_calls_repeat_until_a_turn_lasts_min_turn_s(tiny_model):  # noqa: F811
    import time

    tok = load_tokenizer(tiny_model / "tokenizer.json", 32)
    fast, slow = _fake_runner("ref", "pytorch"), _fake_runner("slow")
    inner = slow.fn
    slow.fn = lambda b: (time.sleep(0.02), inner(b))[1]  # 20 ms a call: 3 calls already pass 0.05 s
    out = benchmark([fast, slow], tok, TEXTS, [1], [8], warmup=1, repeats=3, rounds=1, threads=1, progress=False,
                    measure_peak=False, min_turn_s=0.05)  # fmt: skip
    samples = {r["variant"]: r["samples"] for r in out["results"]}
    assert samples["slow"] == 3  # never fewer than repeats, and no more once the turn is long enough
    assert samples["ref"] > 3  # microsecond calls went round the batches again until 0.05 s of them
    assert out["settings"]["min_turn_s"] == 0.05


def test_spread_is_the_widest_relative_range_of_per_round_ratios():
    from kit.optimize.bench import _spread

    med = {("ref", 1, 8): [2.0, 2.0, 2.0], ("a", 1, 8): [1.0, 1.0, 0.5], ("b", 1, 8): [2.0, 2.0, 2.0]}
    assert _spread(med, "ref") == pytest.approx((4.0 - 2.0) / 2.0)  # a's ratios 2, 2, 4
    assert _spread({k: v for k, v in med.items() if k[0] != "a"}, "ref") == 0.0
