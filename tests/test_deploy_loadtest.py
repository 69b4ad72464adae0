"""Load generator and measurement: against a stand-in app (fast, controllable) and once end to end against `kit serve`
on a tiny model. Speed is never asserted here; only that the figures are measured and consistent."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import yaml

from kit.core.errors import DataError, DeployError
from kit.core.params import DeployParams, ServeParams
from kit.deploy.loadclient import load_level
from kit.deploy.loadtest import (
    bare_benchmark,
    run_loadtest,
    summarize,
    texts_from_parquet,
)
from kit.deploy.plots import plot_loadtest
from kit.deploy.servers import smoke_test, start_server
from tests.fixtures_deploy import (
    TEXTS,
    EchoServer,
    tiny_serving_dir,
    write_texts_parquet,
)


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    srv = EchoServer(tmp_path_factory.mktemp("echo"))
    yield srv
    srv.stop()


def test_load_level_measures_latency_throughput_and_server(echo):
    row = load_level(echo.url, TEXTS, concurrency=4, duration_s=1.0, warmup_s=0.3, server_pid=echo.proc.pid,
                     sample_interval_s=0.1)  # fmt: skip
    assert row["concurrency"] == 4 and row["errors"] == 0 and row["requests"] > 10
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["p50_ms"] >= 2.0  # the app sleeps 2 ms per request
    # Throughput is completed requests over the measured window.
    assert row["throughput_rps"] == pytest.approx(row["requests"] / row["window_s"], rel=0.02)
    assert row["server_rss_peak_mib"] > 10 and row["server_cpu_cores"] > 0
    assert row["client_cpu_cores"] > 0


def test_errors_are_counted_not_timed(echo):
    texts = ["fine", "FAIL please"]
    row = load_level(echo.url, texts, concurrency=1, duration_s=0.5, warmup_s=0.0)
    # One worker alternates the two texts: about half its requests fail.
    assert row["errors"] > 0 and row["requests"] - row["errors"] > 0
    assert abs(row["errors"] - (row["requests"] - row["errors"])) <= 1
    assert "server_cpu_cores" not in row  # no pid given, no server figures


def test_load_level_runs_inside_a_running_event_loop(echo):
    """Jupyter cells run inside an event loop; the load generator must not need asyncio.run on it."""

    async def cell():
        return load_level(echo.url, TEXTS, concurrency=2, duration_s=0.3, warmup_s=0.0)

    assert asyncio.run(cell())["requests"] > 0


def test_smoke_test_checks_every_endpoint(echo):
    res = smoke_test(echo.url, TEXTS, ["negative", "neutral", "positive"])
    assert [c["check"] for c in res["checks"]] == [
        "GET /healthz", "GET /readyz", "POST /predict", "POST /predict (bad body)", "GET /metrics"
    ]  # fmt: skip
    with pytest.raises(DeployError, match="malformed prediction"):
        smoke_test(echo.url, TEXTS, ["cat", "dog"])


def _row(c, rps, p99, errors=0, cpu=1.0, rss=200.0):
    return {"concurrency": c, "throughput_rps": rps, "p99_ms": p99, "errors": errors, "server_cpu_cores": cpu,
            "server_rss_peak_mib": rss, "client_cpu_cores": 0.1}  # fmt: skip


def test_summarize_ratios_and_sustainable_level():
    levels = [_row(1, 40, 20), _row(8, 100, 60, rss=250), _row(32, 120, 180, cpu=1.9)]
    nobatch = [_row(8, 50, 150), _row(32, 52, 600)]
    s = summarize(levels, nobatch, 120.0, ratio_concurrency=None, p99_target_ms=100)
    assert s["sustainable_concurrency"] == 8 and s["ratio_concurrency"] == 8
    assert s["ratio_concurrency_rule"] == "highest level with p99 <= 100 ms"
    assert s["bare_throughput_rps"] == 120.0 and s["server_over_bare"] == pytest.approx(100 / 120, abs=1e-3)
    assert s["batching_over_nobatch"] == 2.0
    assert [(g["concurrency"], g["ratio"]) for g in s["batching_gain"]] == [(8, 2.0), (32, round(120 / 52, 3))]
    assert s["resources"]["rss_peak_mib"] == 250 and s["resources"]["cpu_peak_cores"] == 1.9
    fixed = summarize(levels, nobatch, 120.0, ratio_concurrency=32, p99_target_ms=100)
    assert fixed["ratio_concurrency"] == 32 and fixed["ratio_concurrency_rule"] == "deploy.ratio_concurrency"
    none_meet = summarize([_row(4, 10, 500)], [], 120.0, None, 100)
    assert none_meet["sustainable_concurrency"] is None and none_meet["ratio_concurrency"] == 4
    assert none_meet["ratio_concurrency_rule"].startswith("no level met")


def test_goals_are_judged_where_the_plan_says():
    from kit.deploy.goals import judge_goals

    levels = [_row(4, 100, 30), _row(8, 150, 50), _row(16, 190, 90), _row(24, 195, 140)]
    nobatch = [_row(4, 110, 30), _row(8, 120, 70), _row(16, 130, 120), _row(24, 131, 200)]
    s = summarize(levels, nobatch, 200.0, None, 100)
    goals = {g["name"]: g for g in judge_goals(s, DeployParams())}
    assert s["ratio_concurrency"] == 16 and goals["server_over_bare"]["value"] == 0.95
    assert goals["server_over_bare"]["met"] and "16 clients" in goals["server_over_bare"]["where"]
    assert goals["p99_ms_at_ratio"]["value"] == 90 and goals["p99_ms_at_ratio"]["met"]
    assert goals["batching_over_nobatch_at_16"]["value"] == round(190 / 130, 3)
    assert goals["batching_over_nobatch_at_16"]["met"]  # 1.46 >= 1.3
    low = goals["batching_over_nobatch_min_from_4"]
    assert low["value"] == round(100 / 110, 3) and not low["met"] and "4 clients" in low["where"]
    # A goal whose level was not measured is not met, and says so.
    unmeasured = {g["name"]: g for g in judge_goals(s, DeployParams(goal_gain_concurrency=12))}
    assert unmeasured["batching_over_nobatch_at_12"]["value"] is None
    assert not unmeasured["batching_over_nobatch_at_12"]["met"]
    assert "not measured" in unmeasured["batching_over_nobatch_at_12"]["where"]


def test_saturation_needs_a_flat_rate_and_a_rising_p99():
    from kit.deploy.goals import saturated

    assert not saturated([_row(8, 100, 50)], 0.03)
    assert saturated([_row(8, 100, 50), _row(16, 102, 90)], 0.03)
    assert not saturated([_row(8, 100, 50), _row(16, 110, 90)], 0.03)  # still climbing
    assert not saturated([_row(8, 100, 90), _row(16, 101, 80)], 0.03)  # p99 fell: noise, keep going


def test_the_plan_stops_a_saturated_sweep_and_alternates_the_servers(monkeypatch):
    from types import SimpleNamespace

    import kit.deploy.loadtest as lt

    # Batching keeps climbing; max batch 1 is flat from 16 clients on with p99 rising.
    rates = {"batching": {4: 100, 8: 150, 16: 190, 24: 230, 32: 260}, "nobatch": {4: 90, 8: 100, 16: 110, 24: 111}}
    calls: list[tuple[str, int]] = []

    def fake_level(url, texts, c, *args):
        kind = url
        calls.append((kind, c))
        return _row(c, rates[kind].get(c, 111), 10 * c)

    monkeypatch.setattr(lt, "load_level", fake_level)
    monkeypatch.setattr(lt, "bare_benchmark", lambda *a, bucketing, **k: {"batch_size": a[2], "bucketing": bucketing,
                                                                            "throughput_rps": 100.0})  # fmt: skip
    servers = {k: SimpleNamespace(url=k, pid=None) for k in ("batching", "nobatch")}
    d = DeployParams(concurrency_levels=[4, 8, 16, 24, 32], bare_batch_sizes=[1, 4, 8])
    runs, sweep = lt._run_plan(servers, [], None, TEXTS, {"max_batch_size": 4, "threads": 1}, d, progress=False)
    assert [r["concurrency"] for r in runs["batching"]] == [4, 8, 16, 24, 32]
    assert [r["concurrency"] for r in runs["nobatch"]] == [4, 8, 16, 24]  # 24 added < 3% at a higher p99
    assert sweep["stopped_at"] == {"batching": None, "nobatch": 24} and sweep["skipped"]["nobatch"] == [32]
    assert calls[:4] == [("batching", 4), ("nobatch", 4), ("nobatch", 8), ("batching", 8)]  # ABBA
    # The bare grid before and after: batch 1 once, larger sizes (up to the server's limit) with and without buckets.
    assert [(r["batch_size"], r["bucketing"]) for r in runs["bare"]] == [(1, False), (4, False), (4, True)] * 2


def test_bare_section_takes_the_best_configuration_as_the_ceiling():
    from kit.deploy.bare import bare_section

    runs = [{"batch_size": b, "bucketing": k, "throughput_rps": r}
            for b, k, r in ((1, False, 100), (8, False, 90), (8, True, 130), (1, False, 110), (8, False, 94),
                            (8, True, 126))]  # fmt: skip
    s = bare_section(runs)
    assert (s["batch_size"], s["bucketing"], s["throughput_rps"]) == (8, True, 128.0) and len(s["runs"]) == 2
    assert s["unbatched"]["throughput_rps"] == 105.0 and s["batch_over_unbatched"] == round(128 / 105, 3)
    assert [(g["batch_size"], g["bucketing"], g["throughput_rps"]) for g in s["grid"]] == [
        (1, False, 105.0), (8, False, 92.0), (8, True, 128.0)
    ]  # fmt: skip


def test_texts_from_parquet(tmp_path):
    p = write_texts_parquet(tmp_path / "test.parquet", TEXTS)
    got = texts_from_parquet(p, max_texts=5, seed=1)
    assert len(got) == 5 and set(got) <= set(TEXTS)
    assert got == texts_from_parquet(p, max_texts=5, seed=1)
    with pytest.raises(DataError, match="no column 'body'"):
        texts_from_parquet(p, column="body")
    with pytest.raises(DataError, match="not found"):
        texts_from_parquet(tmp_path / "none.parquet")


def test_start_server_reports_a_broken_model_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="exited with"):
        start_server(tmp_path / "empty", ServeParams().model_dump(), tmp_path / "logs", timeout_s=60)


def test_run_loadtest_end_to_end_on_a_tiny_model(tmp_path):
    model_dir = tiny_serving_dir()
    serve = ServeParams(threads=1, max_batch_size=4, max_delay_ms=2.0, graceful_timeout_s=5).model_dump()
    deploy = DeployParams(
        concurrency_levels=[1, 4], ratio_concurrency=4, nobatch_levels=[4], duration_s=0.8, warmup_s=0.2,
        bare_seconds=0.1, bare_batch_sizes=[1, 4], sample_interval_s=0.1, startup_timeout_s=90,
    )  # fmt: skip
    rep = run_loadtest(model_dir, TEXTS * 5, serve, deploy, tmp_path / "work", progress=False)
    assert [r["concurrency"] for r in rep["levels"]] == [1, 4]
    assert [r["concurrency"] for r in rep["nobatch_levels"]] == [4]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in rep["levels"] + rep["nobatch_levels"])
    assert rep["cold_start"]["ready_s"] > 0 and rep["cold_start"]["first_request_ms"] > 0
    assert rep["shutdown"]["batching"]["exit_code"] == 0  # SIGTERM drains and exits cleanly
    assert rep["smoke_test"]["ok"]
    # The ceiling is the best of the bare grid (batch 1, and 4 with and without buckets), each measured twice.
    grid = rep["bare"]["grid"]
    assert [(g["batch_size"], g["bucketing"]) for g in grid] == [(1, False), (4, False), (4, True)]
    assert all(len(g["runs"]) == 2 for g in grid)
    assert rep["bare"]["throughput_rps"] == max(g["throughput_rps"] for g in grid)
    assert rep["bare_throughput_rps"] == rep["bare"]["throughput_rps"]
    # Each bare-model rate sits beside its batch size; the unbatched one is batch size 1.
    assert rep["bare"]["unbatched"]["batch_size"] == 1 and len(rep["bare"]["unbatched"]["runs"]) == 2
    assert {g["name"] for g in rep["goals"]} == set(rep["targets"]) and len(rep["goals"]) == 4
    assert rep["bare"]["batch_over_unbatched"] == pytest.approx(
        rep["bare"]["throughput_rps"] / rep["bare"]["unbatched"]["throughput_rps"], abs=2e-3
    )
    assert rep["config"]["serve"] == {
        "max_batch_size": 4, "max_delay_ms": 2.0, "batch_wait": "adaptive", "threads": 1, "ort_spinning": False
    }  # fmt: skip
    assert rep["server_over_bare"] == pytest.approx(
        rep["levels"][1]["throughput_rps"] / rep["bare_throughput_rps"], abs=2e-3
    )
    assert rep["resources"]["rss_peak_mib"] > 50
    # The server's own batch-size histogram: batch 1 means batch 1; with batching, 1 to max_batch_size.
    assert rep["nobatch_levels"][0]["mean_batch_size"] == 1.0
    assert all(1.0 <= r["mean_batch_size"] <= 4 for r in rep["levels"])
    # The adaptive wait the batcher reported: within [0, max_delay_ms].
    assert all(0.0 <= r["batch_wait_limit_ms"] <= 2.0 for r in rep["levels"])
    assert rep["model"]["version"] == "test-0.1"
    json.dumps(rep)  # the report is plain JSON
    f1, f2 = plot_loadtest(rep)
    assert f1.axes[0].get_xlabel() == "concurrent clients" and len(f2.axes[0].lines) == 3
    assert rep["replicas"] is None  # serve.threads 1: nothing to split
    # The params files the servers ran with: batching off really means max batch 1.
    nob = yaml.safe_load((tmp_path / "work" / "params_nobatch.yaml").read_text())
    assert nob["serve"]["max_batch_size"] == 1


def test_bare_benchmark_counts_texts(tmp_path):
    for bucketing in (False, True):
        res = bare_benchmark(tiny_serving_dir(), TEXTS, batch_size=3, threads=1, seconds=0.2, bucketing=bucketing)
        assert res["batch_size"] == 3 and res["bucketing"] is bucketing
        assert res["batches"] >= 3 and res["throughput_rps"] > 0
        assert res["batch_p50_ms"] <= res["batch_p99_ms"]


def test_bucketed_bare_batches_hold_texts_of_similar_length():
    from kit.deploy.bare import _batches
    from kit.serve.model import OnnxTextClassifier, read_model_dir

    model = OnnxTextClassifier(read_model_dir(tiny_serving_dir(), 64), 1)
    texts = [("word " * n).strip() for n in (1, 30, 2, 29, 3, 28, 4, 27)]
    spans = [max(map(len, b)) - min(map(len, b)) for b in _batches(model, texts, 4, bucketing=True)]
    mixed = [max(map(len, b)) - min(map(len, b)) for b in _batches(model, texts, 4, bucketing=False)]
    assert max(spans) < 20 < min(mixed)


def test_deploy_params_reject_inconsistent_levels():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"must be one of deploy.concurrency_levels \[1, 2\], got 3"):
        DeployParams(concurrency_levels=[1, 2], ratio_concurrency=3)
    with pytest.raises(ValidationError, match="must be a subset of deploy.concurrency_levels"):
        DeployParams(concurrency_levels=[1, 2], ratio_concurrency=None, nobatch_levels=[4])


async def _read_request(reader: asyncio.StreamReader) -> tuple[dict[bytes, bytes], bytes] | None:
    """One HTTP/1.1 request off a test server's stream: (lower-cased headers, body), None once the client hung up."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:] if ln)}
    return headers, await reader.readexactly(int(headers[b"content-length"]))


def test_raw_connection_reads_chunked_and_reconnects():
    from kit.deploy.loadclient import _Connection

    seen = []

    async def handle(reader, writer):
        while (request := await _read_request(reader)) is not None:
            body = request[1]
            seen.append(body)
            if b'"a"' in body:  # chunked body, keep the connection
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            elif b'"b"' in body:  # an error, then the server hangs up
                writer.write(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
                await writer.drain()
                break
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    async def run():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = _Connection("127.0.0.1", port, timeout_s=5)
        statuses = [await conn.post(b'{"texts": ["a"]}'), await conn.post(b'{"texts": ["b"]}')]
        statuses.append(await conn.post(b'{"texts": ["c"]}'))  # needs a new connection
        conn.close()
        server.close()
        await server.wait_closed()
        return statuses

    assert asyncio.run(run()) == [200, 503, 200]
    assert seen == [b'{"texts": ["a"]}', b'{"texts": ["b"]}', b'{"texts": ["c"]}']


def test_post_all_sends_each_request_once_with_its_headers_and_stops_at_a_refusal():
    from kit.deploy.loadclient import post_all

    seen: list[tuple[bytes, bytes]] = []

    async def handle(reader, writer):
        while (request := await _read_request(reader)) is not None:
            headers, body = request
            seen.append((headers[b"x-request-id"], body))
            if body == b"refuse":
                writer.write(b"HTTP/1.1 422 Unprocessable\r\nContent-Length: 7\r\n\r\nbad one")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    async def run(requests):
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await post_all(f"http://127.0.0.1:{port}", requests, concurrency=3, timeout_s=5)
        finally:
            server.close()
            await server.wait_closed()

    good = [(b"x-request-id: r%d\r\n" % i, b"%d" % i) for i in range(20)]
    assert asyncio.run(run(good)) == []
    assert sorted(seen) == sorted((b"r%d" % i, b"%d" % i) for i in range(20))

    seen.clear()
    mixed = good[:5] + [(b"x-request-id: r-bad\r\n", b"refuse")] + good[5:]
    assert asyncio.run(run(mixed)) == [(5, 422, b"bad one")]
    assert len(seen) < len(mixed)  # the others stopped once one was refused (each worker may finish its request)


def test_replica_cores_split_the_servers_threads_or_refuse():
    from kit.deploy.replicas import core_sets

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip(f"this machine lets the tests use {len(cores)} core; a split needs 2")
    assert core_sets(2, 1) == [[cores[0]], [cores[1]]]
    assert core_sets(2, 2) is None and core_sets(3, 2) is None  # one replica, or an uneven split: nothing to compare
    with pytest.raises(DeployError, match=rf"needs {len(cores) + 1} usable cores, this process may use {len(cores)}"):
        core_sets(len(cores) + 1, 1)


def test_the_plan_runs_the_replicas_at_their_levels_interleaved(monkeypatch):
    from types import SimpleNamespace

    import kit.deploy.loadtest as lt

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(lt, "load_level", lambda url, texts, c, *a: calls.append((url, c)) or _row(c, 100.0, 10.0))
    monkeypatch.setattr(lt, "load_replicas", lambda hs, texts, c, *a: calls.append(("replicas", c)) or
                        {**_row(c, 130.0, 12.0), "requests": 1})  # fmt: skip
    monkeypatch.setattr(lt, "bare_benchmark", lambda *a, bucketing, **k: {"batch_size": a[2], "bucketing": bucketing,
                                                                            "throughput_rps": 100.0})  # fmt: skip
    servers = {k: SimpleNamespace(url=k, pid=None) for k in ("batching", "nobatch")}
    d = DeployParams(concurrency_levels=[4, 8, 16], nobatch_levels=[4], bare_batch_sizes=[1])
    assert d.replica_levels is None  # the default: goal_gain_concurrency (16)
    runs, _ = lt._run_plan(servers, [object()], None, TEXTS, {"max_batch_size": 4, "threads": 2}, d, progress=False)
    assert calls == [("batching", 4), ("nobatch", 4), ("batching", 8), ("batching", 16), ("replicas", 16)]
    d = DeployParams(concurrency_levels=[4, 8, 16], nobatch_levels=[4], bare_batch_sizes=[1], replica_levels=[4, 8])
    calls.clear()
    runs, _ = lt._run_plan(servers, [object()], None, TEXTS, {"max_batch_size": 4, "threads": 2}, d, progress=False)
    # Which arm goes first alternates by level, replicas included.
    assert calls[:5] == [("batching", 4), ("nobatch", 4), ("replicas", 4), ("replicas", 8), ("batching", 8)]
    assert [r["concurrency"] for r in runs["replicas"]] == [4, 8]
    runs, _ = lt._run_plan(servers, [], None, TEXTS, {"max_batch_size": 4, "threads": 2}, d, progress=False)
    assert runs["replicas"] == []  # no replicas started (no split): no arm
    with pytest.raises(ValueError, match=r"must be a subset of deploy.concurrency_levels, not in it: \[16\]"):
        DeployParams(concurrency_levels=[4, 8], replica_levels=[16])


def test_replicas_are_pinned_servers_sharing_the_load(tmp_path):
    import psutil

    from kit.deploy.replicas import core_sets, load_replicas, replicas_section, start_replicas
    from kit.deploy.servers import stop_server

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip(f"this machine lets the tests use {len(os.sched_getaffinity(0))} core; replicas need 2")
    cores = core_sets(2, 1)
    assert cores is not None
    serve = ServeParams(max_batch_size=4, max_delay_ms=2.0, graceful_timeout_s=5).model_dump()
    hs = start_replicas(tiny_serving_dir(), serve, tmp_path, cores, 90, TEXTS[0])
    try:
        for h, cs in zip(hs, cores, strict=True):
            proc = psutil.Process(h.pid)
            # Every thread of each server, ONNX Runtime's pool included, runs on that replica's cores only.
            assert {tuple(psutil.Process(h.pid).cpu_affinity())} == {tuple(cs)}
            assert all(os.sched_getaffinity(t.id) == set(cs) for t in proc.threads())
            assert yaml.safe_load(h.params_path.read_text())["serve"]["threads"] == 1
        row = load_replicas(hs, TEXTS * 5, 3, 0.6, 0.1)
    finally:
        stops = [stop_server(h, timeout_s=15) for h in hs]
    assert [s["exit_code"] for s in stops] == [0, 0]
    assert row["clients_per_replica"] == [2, 1] and row["errors"] == 0 and row["requests"] > 0
    assert row["throughput_rps"] > 0 and row["p99_ms"] == max(row["replica_p99_ms"])
    single = [{**row, "throughput_rps": row["throughput_rps"] / 2}]
    sec = replicas_section([row], single, cores, bare_rps=row["throughput_rps"] * 4, p99_target_ms=1e6)
    assert sec["over_single"][0]["ratio"] == pytest.approx(2.0, abs=2e-3)
    assert sec["best_concurrency"] == 3 and sec["replicas_over_bare"] == pytest.approx(0.25, abs=2e-3)
    assert replicas_section([row], single, cores, None, p99_target_ms=0.001)["best_rps_within_p99"] is None


def test_a_replica_that_will_not_start_stops_the_ones_already_running(monkeypatch):
    import kit.deploy.replicas as rp

    started, stopped = [], []

    def fake_start(model_dir, serve, work_dir, label, timeout_s, probe_text, cpus):
        if label == "replica1":
            raise DeployError("kit serve (replica1) exited with 1 before ready")
        started.append(label)
        return label

    monkeypatch.setattr(rp, "start_server", fake_start)
    monkeypatch.setattr(rp, "stop_server", lambda h, timeout_s: stopped.append(h))
    with pytest.raises(DeployError, match="replica1"):
        rp.start_replicas("models/serving", {"threads": 2}, "work", [[0], [1]], 30, "hello")
    assert started == stopped == ["replica0"]
