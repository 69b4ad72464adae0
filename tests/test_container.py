"""The server image built from the repo's Dockerfile and run with podman as production runs it (read-only root fs, no
capabilities, UID 10001, one CPU, the manifests' `kit serve` arguments with API keys from a read-only mount): keys
enforced, metrics and probes on the admin port only, answers like plain ONNX Runtime, refuses hostile input, and a
SIGTERM under sustained keep-alive load loses no request.

No registry can be reached here: the image is built with the Dockerfile's FROM lines swapped, in a temp copy of the
build context, for a local Debian bookworm + python3 base made with debootstrap (the same Debian release and Python
as python:3.11-slim-bookworm), and pip installs wheels downloaded on the host (tests/fixtures_container.py). The repo's
Dockerfile is unchanged. Skipped, with the reason printed, where podman cannot run.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from kit.core.params import load_params
from kit.deploy.pod import API_KEYS_DIR, RUN_AS_UID, admin_port, serve_args
from kit.serve.model import read_model_dir
from tests.fixtures_container import BuiltImage, Container, build_image, podman_problem
from tests.fixtures_drain import load_and_signal
from tests.fixtures_hostile import parse_metrics, run_hostile
from tests.fixtures_serve import ROOT, SAMPLE_TEXTS, Reference, assert_matches, build_tiny_serving_dir

PARAMS = load_params(ROOT / "params.yaml")  # the params file the image bakes in
SERVE = PARAMS.serve
# The Deployment's container arguments with an API-key Secret set: `kit serve ... --api-key-file API_KEYS_DIR/...`.
_WITH_KEYS = PARAMS.model_copy(update={"deploy": PARAMS.deploy.model_copy(update={"api_key_secret": "kit-api-keys"})})
COMMAND = ("kit", *serve_args(_WITH_KEYS))
ADMIN_PORT = admin_port(PARAMS)
KEY = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {KEY}"}


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


def _key_dir(tmp: Path) -> Path:
    """A dir holding the key file `api-keys` as the Secret volume does: one key per line, read-only, readable by the
    server's group only (the manifests' defaultMode 0440 with fsGroup 10001) when this runs as root."""
    d = tmp / "secret"
    d.mkdir()
    keys = d / "api-keys"
    keys.write_text(f"{secrets.token_urlsafe(32)}\n\n  {KEY}  \n")  # two keys, a blank line, padding
    if os.geteuid() == 0:
        os.chown(d, 0, RUN_AS_UID)
        os.chown(keys, 0, RUN_AS_UID)
        d.chmod(0o750)
        keys.chmod(0o440)
    else:  # pragma: no cover - rootless podman maps IDs: plain world-readable
        d.chmod(0o755)
        keys.chmod(0o444)
    return d


def _serve(image: BuiltImage, tmp: Path, serve: dict | None = None) -> Container:
    """The image run with the manifests' arguments, the key dir mounted read-only where the Secret is, and `serve`
    (params overrides) in a params file mounted over the baked one."""
    extra = ["--volume", f"{_key_dir(tmp)}:{API_KEYS_DIR}:ro"]
    if serve:
        params = tmp / "params.yaml"
        params.write_text(yaml.safe_dump({"serve": SERVE.model_dump() | serve}))
        params.chmod(0o644)
        extra += ["--volume", f"{params}:/app/params.yaml:ro"]
    return Container(image.id or image.tag, extra=tuple(extra), command=COMMAND, admin_port=ADMIN_PORT)


@pytest.fixture(scope="module")
def running(
    image: BuiltImage, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    with _serve(image, tmp_path_factory.mktemp("running")) as c:
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
    # PID 1 runs the manifests' arguments (`kit serve ... --api-key-file ...`; /proc cmdline is NUL-separated).
    assert "\x00".join(COMMAND[1:]) in status.stdout, status.stdout[-500:]
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
    with httpx.Client(base_url=running.url, timeout=30, headers=AUTH) as client:
        # One text per request, sent in turn: a batch of one, unpadded, so even an INT8 model's dynamic quantisation
        # sees what the unbatched host reference sees.
        for text in SAMPLE_TEXTS[:6]:
            r = client.post("/predict", json={"texts": [text]})
            assert r.status_code == 200, r.text
            assert_matches(r.json()["predictions"], ref, [text], atol=1e-4)
        r = client.post("/predict", json={"texts": SAMPLE_TEXTS})
        assert r.status_code == 200 and r.json()["model_variant"] == meta.variant
        _well_formed(meta.labels)(r.json()["predictions"], SAMPLE_TEXTS)


def test_api_keys_from_the_mounted_secret_and_metrics_on_the_admin_port_only(running: Container) -> None:
    body = {"texts": ["is this key any good?"]}
    with httpx.Client(base_url=running.url, timeout=30) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}, {"Authorization": KEY}):
            r = api.post("/predict", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), (headers, r.text)
            assert KEY not in r.text
        for headers in (AUTH, {"X-API-Key": KEY}):
            r = api.post("/predict", json=body, headers=headers)
            assert r.status_code == 200 and len(r.json()["predictions"]) == 1, (headers, r.text)
        assert api.get("/metrics", headers=AUTH).status_code == 404  # the API port serves no metrics, key or not
        # Probes need no key on either port (Knative and KServe probe the API port).
        assert api.get("/readyz").status_code == 200 and api.get("/healthz").status_code == 200
    with httpx.Client(base_url=running.admin_url, timeout=30) as admin:
        metrics = admin.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain"), metrics.text
        counts = parse_metrics(metrics.text)
        answered = {dict(k[1])["status"]: v for k, v in counts.items() if k[0] == "kit_serve_requests_total"
                    and dict(k[1])["route"] == "/predict"}  # fmt: skip
        assert answered.get("401", 0) >= 4 and answered.get("200", 0) >= 2, answered
        assert admin.get("/readyz").status_code == 200 and admin.get("/healthz").json() == {"status": "alive"}
        assert admin.post("/predict", json=body, headers=AUTH).status_code in (404, 405)  # no API on the admin port


@pytest.mark.timeout(300)
def test_hostile_input_against_the_container(running: Container, image: BuiltImage) -> None:
    labels = read_model_dir(image.serving_dir, SERVE.max_length).labels
    run = run_hostile(running.url, SERVE, _well_formed(labels), headers=AUTH, admin_url=running.admin_url)
    logs = running.logs()
    assert "Traceback" not in logs, logs[-3000:]
    access = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert len(access) >= run.n_sent + run.n_valid


@pytest.mark.timeout(300)
@pytest.mark.parametrize("drain_s", [0.0, 2.0], ids=["no-window", "readiness-fail-window"])
def test_sigterm_under_keepalive_load_loses_nothing(image: BuiltImage, tmp_path: Path, drain_s: float) -> None:
    # 48 keep-alive clients (tests/fixtures_drain.py), one request in flight each, batched and queued in the server
    # when `podman kill --signal TERM` reaches PID 1; no SIGKILL follows, so exit 0 means the server drained itself.
    # Queued batches are in flight at the signal too, so the former held-batch `podman stop` test is covered here.
    with _serve(image, tmp_path, {"drain_s": drain_s, "access_log": False}) as c:
        c.wait_ready(timeout=180)
        exit_code: list[int] = []
        gone = threading.Event()
        killed_after: list[float] = []
        readyz_during_window: list[int] = []

        def wait() -> None:
            try:
                exit_code.append(c.wait(timeout_s=240))
            finally:
                gone.set()

        def sigterm() -> None:
            t0 = time.monotonic()
            c.kill("TERM")
            killed_after.append(time.monotonic() - t0)  # podman's own start-up: the signal lands within this
            threading.Thread(target=wait, daemon=True).start()
            if drain_s:  # inside the window the listener is open and readiness fails, on the admin port too
                readyz_during_window.append(httpx.get(c.admin_url + "/readyz", timeout=5).status_code)

        res = asyncio.run(load_and_signal(c.url, sigterm, clients=48, exited=gone.is_set, headers=AUTH))
        assert gone.wait(240), "the container did not exit after SIGTERM"
        logs = c.logs()
    print(f"drain_s={drain_s}: {res.summary()}; podman kill took {killed_after[0]:.2f} s")
    assert len(res.before()) >= 48, res.summary()
    assert res.lost() == [], (res.summary(), res.lost()[:5])
    assert res.five_xx() == [], res.five_xx()[:5]
    assert all(o.status in (200, None) for o in res.outcomes), {o.status for o in res.outcomes}
    # Once the server has seen the signal, every answer closes its connection (clients reconnect elsewhere).
    late = res.answered_after(killed_after[0] + 0.5)
    assert all(o.connection == "close" for o in late), [o for o in late if o.connection != "close"][:5]
    if drain_s:
        assert readyz_during_window == [503]
        assert late, f"the readiness-fail window answered nothing: {res.summary()}"
    assert exit_code == [0], logs[-3000:]
    assert "Shutting down" in logs and "Traceback" not in logs, logs[-3000:]
