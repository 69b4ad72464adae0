"""The server image built from the repo's Dockerfile and run with podman as production runs it (read-only root fs, no
capabilities, UID 10001, one CPU): ready, answers like plain ONNX Runtime, refuses hostile input, drains on stop.

No registry can be reached here: the image is built with the Dockerfile's FROM lines swapped, in a temp copy of the
build context, for a local Debian bookworm + python3 base made with debootstrap (the same Debian release and Python
as python:3.11-slim-bookworm), and pip installs wheels downloaded on the host (tests/fixtures_container.py). The repo's
Dockerfile is unchanged. Skipped, with the reason printed, where podman cannot run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from kit.core.params import load_params
from kit.serve.model import read_model_dir
from tests.fixtures_container import BuiltImage, Container, build_image, podman_problem
from tests.fixtures_hostile import parse_metrics, run_hostile
from tests.fixtures_serve import ROOT, SAMPLE_TEXTS, Reference, assert_matches, build_tiny_serving_dir

SERVE = load_params(ROOT / "params.yaml").serve  # the params file the image bakes in


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """Print past pytest's capture: the figures belong in every run's output."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:  # pragma: no cover - run without pytest's capture or terminal plugins
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _secs(s: float | None) -> str:
    return "cached" if s is None else f"{s:.1f} s"


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    reason = podman_problem()
    if reason is not None:
        _say(request, f"container tests skipped: {reason}")
        pytest.skip(reason)
    serving = ROOT / "models" / "serving"
    if not (serving / "model.onnx").is_file():  # before `dvc repro optimize` (a fresh clone): bake a tiny model
        serving = build_tiny_serving_dir(tmp_path_factory.mktemp("serving") / "model")
    model = "models/serving" if serving.is_relative_to(ROOT) else "a tiny test model"
    built = build_image(serving)
    _say(
        request,
        f"\nimage {built.tag} with {model}: {built.size_mb} MB; base image {_secs(built.base_build_s)}, "
        f"wheels {_secs(built.wheels_s)}, image build {built.build_s:.1f} s",
    )
    return built


@pytest.fixture(scope="module")
def running(image: BuiltImage, request: pytest.FixtureRequest) -> Iterator[Container]:
    with Container(image.tag) as c:
        ready_s = c.wait_ready(timeout=180)  # a hang guard, not a speed check: speed is benchmarks/bench_container.py
        _say(request, f"\ncontainer start-to-ready (podman run -> /readyz 200, --cpus 1): {ready_s:.2f} s")
        yield c


def _well_formed(labels: list[str]) -> Callable[[list[dict], list[str]], None]:
    """A check of 200 answers: one per text, a distribution over `labels` whose top is the label given."""

    def check(predictions: list[dict], texts: list[str]) -> None:
        assert len(predictions) == len(texts)
        for p in predictions:
            assert sorted(p["probs"]) == sorted(labels) and abs(sum(p["probs"].values()) - 1) < 1e-4, p
            assert p["score"] == max(p["probs"].values()) and p["probs"][p["label"]] == p["score"], p

    return check


def test_server_runs_as_10001_without_capabilities_on_a_read_only_root(running: Container) -> None:
    status = running.exec("python", "-c", "print(open('/proc/1/status').read(), open('/proc/1/cmdline').read())")
    assert status.returncode == 0, status.stderr
    fields = dict(line.split(":", 1) for line in status.stdout.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["10001"] * 4 and fields["Gid"].split() == ["10001"] * 4  # PID 1 is the server
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    assert "kit.serve" in status.stdout
    # Root may write anywhere by permissions, so only a read-only mount can refuse it; /tmp (tmpfs) stays writable.
    root_write = running.exec("python", "-c", "open('/app/probe', 'w')", user="0")
    assert root_write.returncode != 0 and "Read-only file system" in root_write.stderr, root_write.stderr
    tmp_write = running.exec("python", "-c", "open('/tmp/probe', 'w').write('ok')")
    assert tmp_write.returncode == 0, tmp_write.stderr


def test_image_holds_the_pinned_runtime_set_and_no_torch(running: Container) -> None:
    code = ("import importlib.metadata as m, importlib.util as u, json; print(json.dumps({'dists': "
            "{d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}, 'specs': "
            "[n for n in ('torch', 'transformers', 'onnx', 'pandas', 'sklearn') if u.find_spec(n)]}))")  # fmt: skip
    res = running.exec("python", "-c", code)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert found["specs"] == [], found["specs"]
    pins = {}
    for line in (ROOT / "requirements-serve.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    assert {n: found["dists"].get(n) for n in pins} == pins  # every pin installed at its version
    assert found["dists"]["kit"] and not {"torch", "transformers", "onnx", "pandas"} & set(found["dists"])


def test_ready_container_answers_like_plain_onnxruntime(running: Container, image: BuiltImage) -> None:
    meta = read_model_dir(image.serving_dir, SERVE.max_length)
    ready = httpx.get(running.url + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["model_version"] == meta.version
    assert httpx.get(running.url + "/healthz", timeout=5).json() == {"status": "alive"}
    health = running.healthcheck()  # the Dockerfile's HEALTHCHECK, run inside the container
    assert health.returncode == 0 and running.state()["Health"]["Status"] == "healthy", health.stderr
    ref = Reference(image.serving_dir, meta.max_length)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        # One text per request, sent in turn: a batch of one, unpadded, so even an INT8 model's dynamic quantisation
        # sees what the unbatched host reference sees.
        for text in SAMPLE_TEXTS[:6]:
            r = client.post("/predict", json={"texts": [text]})
            assert r.status_code == 200, r.text
            assert_matches(r.json()["predictions"], ref, [text], atol=1e-4)
        r = client.post("/predict", json={"texts": SAMPLE_TEXTS})
        assert r.status_code == 200 and r.json()["model_variant"] == meta.variant
        _well_formed(meta.labels)(r.json()["predictions"], SAMPLE_TEXTS)


@pytest.mark.timeout(300)
def test_hostile_input_against_the_container(running: Container, image: BuiltImage) -> None:
    labels = read_model_dir(image.serving_dir, SERVE.max_length).labels
    run = run_hostile(running.url, SERVE, _well_formed(labels))
    logs = running.logs()
    assert "Traceback" not in logs, logs[-3000:]
    access = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert len(access) >= run.n_sent + run.n_valid


@pytest.mark.timeout(300)
def test_podman_stop_drains_every_in_flight_request(image: BuiltImage, tmp_path: Path) -> None:
    # Batches held open 10 s (a fixed wait, through a mounted params file) put every request in flight, queued and
    # unanswered, when `podman stop` sends SIGTERM, whatever the machine's speed.
    params = tmp_path / "params.yaml"
    serve = SERVE.model_dump() | {"max_batch_size": 64, "max_delay_ms": 10_000, "batch_wait": "fixed"}
    params.write_text(yaml.safe_dump({"serve": serve}))
    params.chmod(0o644)
    texts = [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} ({i})" for i in range(40)]
    with Container(image.tag, extra=("--volume", f"{params}:/app/params.yaml:ro")) as c:
        c.wait_ready(timeout=180)

        async def scenario() -> tuple[list, int]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=c.url, timeout=60, limits=limits) as client:
                tasks = [asyncio.create_task(client.post("/predict", json={"texts": [t]})) for t in texts]
                for _ in range(600):
                    depth = parse_metrics((await client.get("/metrics")).text)[("kit_serve_queue_depth", ())]
                    if depth == len(texts):
                        break
                    await asyncio.sleep(0.05)
                assert depth == len(texts), f"requests never all queued: {depth}"
                assert not any(t.done() for t in tasks)
                stop = asyncio.create_task(asyncio.to_thread(c.stop, 30))  # SIGTERM; SIGKILL after 30 s
                results = await asyncio.gather(*tasks, return_exceptions=True)
                return results, await stop

        results, code = asyncio.run(scenario())
        logs = c.logs()
    lost = [r for r in results if not isinstance(r, httpx.Response) or r.status_code != 200]
    assert lost == [], [repr(r)[:200] for r in lost]
    assert [len(r.json()["predictions"]) for r in results] == [1] * len(texts)
    assert code == 0, logs[-3000:]  # drained and exited by itself, not SIGKILLed after the timeout
    assert "Shutting down" in logs and "Traceback" not in logs, logs[-3000:]
