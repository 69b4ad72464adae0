"""Who may call and who may hold the server: API keys on /predict (in process), metrics only on the admin port, and
500 idle plus slowloris connections against a real `kit serve` that still answers a valid request."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

import httpx
import pytest

from kit.core.errors import KitError
from kit.serve.app import create_app
from kit.serve.auth import UNAUTHORIZED, read_keys
from tests.fixtures_deploy import tiny_serving_dir
from tests.fixtures_serve import ServerProcess, free_port, in_process, serve_params

KEYS = ["k-first-0123456789abcdef", "k-second-fedcba9876543210"]
TEXTS = {"texts": ["hello there"]}


@pytest.fixture(scope="module")
def serving_dir() -> Path:
    return tiny_serving_dir()  # built once per test session, shared with the deploy tests


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(f"\n  {KEYS[0]}  \n{KEYS[1]}\n\n")  # blank lines and padding are not keys
    return path


def test_predict_needs_a_key_and_nothing_else_does(serving_dir: Path, key_file: Path) -> None:
    app = create_app(serving_dir, serve_params(api_key_file=str(key_file)))

    async def calls(c: httpx.AsyncClient) -> dict[str, httpx.Response]:
        post = lambda h: c.post("/predict", json=TEXTS, headers=h)  # noqa: E731
        return {
            "none": await post({}),
            "wrong bearer": await post({"authorization": "Bearer " + KEYS[0][:-1] + "x"}),
            "wrong header": await post({"x-api-key": "nope"}),
            "key as basic": await post({"authorization": "Basic " + KEYS[0]}),
            "empty bearer": await post({"authorization": "Bearer "}),
            "right bearer": await post({"authorization": "Bearer " + KEYS[0]}),
            "right header": await post({"x-api-key": KEYS[1]}),
            "wrong header, right bearer": await post({"x-api-key": "nope", "authorization": "Bearer " + KEYS[1]}),
            "healthz": await c.get("/healthz"),
            "readyz": await c.get("/readyz"),
            "metrics": await c.get("/metrics"),
        }

    r = asyncio.run(in_process(app, calls))
    for name in ("none", "wrong bearer", "wrong header", "key as basic", "empty bearer"):
        assert r[name].status_code == 401, (name, r[name].text)
        assert r[name].json() == {"error": UNAUTHORIZED}, name  # the same answer whatever failed
        assert r[name].headers["www-authenticate"].startswith("Bearer"), name
    for name in ("right bearer", "right header", "wrong header, right bearer"):
        assert r[name].status_code == 200, (name, r[name].text)
        assert len(r[name].json()["predictions"]) == 1
    assert [r[n].status_code for n in ("healthz", "readyz", "metrics")] == [200, 200, 200]
    assert "kit_serve_requests_total" in r["metrics"].text
    # The OpenAPI document names both ways to send the key.
    schemes = app.openapi()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}


def test_without_a_key_file_predict_is_open(serving_dir: Path) -> None:
    app = create_app(serving_dir, serve_params())
    r = asyncio.run(in_process(app, lambda c: c.post("/predict", json=TEXTS)))
    assert r.status_code == 200, r.text


def test_key_file_problems_name_the_file_never_a_key(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="no such|cannot read") as missing:
        read_keys(tmp_path / "absent")
    assert "absent" in str(missing.value)
    blank = tmp_path / "blank"
    blank.write_text("\n  \n")
    with pytest.raises(KitError, match="holds no key"):
        read_keys(blank)
    store = read_keys(_write(tmp_path / "k", KEYS))
    assert len(store) == 2 and store.accepts(KEYS[1]) and not store.accepts(KEYS[1] + " ")
    assert KEYS[0] not in repr(vars(store))  # only digests are kept


def _write(path: Path, keys: list[str]) -> Path:
    path.write_text("\n".join(keys))
    return path


# ----------------------------------------------------------------------------------- real server: ports and slow clients
def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"open-files hard limit {hard} is below the {need} this test needs (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # the server inherits it


async def _hold_connections(port: int, idle: int, slow: int, hold: asyncio.Event, closed: list[int]) -> None:
    """Open `idle` silent connections and `slow` ones dribbling a request head a byte at a time until `hold` is set;
    `closed` counts how many of each kind the server has closed."""

    async def silent() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _until_eof(reader)  # returns when the server closes; cancelled (still open) otherwise
            closed[0] += 1
        finally:
            writer.close()

    async def slowloris() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 10_000
        try:
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, OSError):
            closed[1] += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(silent()) for _ in range(idle)] + [
        asyncio.create_task(slowloris()) for _ in range(slow)
    ]
    await hold.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(1024):
        pass


@pytest.mark.timeout(120)
def test_admin_port_and_slow_clients_against_a_real_server(serving_dir: Path, tmp_path: Path, key_file: Path) -> None:
    _raise_nofile(2048)
    admin_port = free_port()
    srv = ServerProcess(serving_dir, tmp_path, admin_port=admin_port, api_key_file=str(key_file), header_timeout_s=3.0)
    auth = {"authorization": "Bearer " + KEYS[0]}
    try:
        srv.wait_ready()
        # Metrics and probes on the admin port, without a key; metrics and /predict are not on the other's port.
        assert httpx.get(srv.admin_url + "/metrics").status_code == 200
        assert httpx.get(srv.admin_url + "/readyz").status_code == 200
        assert httpx.get(srv.url + "/metrics").status_code == 404
        assert httpx.post(srv.admin_url + "/predict", json=TEXTS, headers=auth).status_code == 404
        assert httpx.post(srv.url + "/predict", json=TEXTS).status_code == 401

        async def scenario() -> tuple[float, int, list[int]]:
            hold, closed = asyncio.Event(), [0, 0]
            holder = asyncio.create_task(_hold_connections(srv.port, idle=500, slow=20, hold=hold, closed=closed))
            await asyncio.sleep(1.0)  # the connections are open and the slow heads are dribbling
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                t0 = time.monotonic()
                r = await c.post("/predict", json=TEXTS, headers=auth)
                took = time.monotonic() - t0
            deadline = time.monotonic() + 60  # header_timeout_s is 3 s: generous, for a loaded machine
            while closed != [500, 20] and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            hold.set()
            await holder
            return took, r.status_code, closed

        took, status, closed = asyncio.run(scenario())
        print(f"valid request beside 500 idle + 20 slowloris connections: {took * 1000:.0f} ms; closed by the "
              f"server after header_timeout_s: {closed[0]} idle, {closed[1]} slowloris")  # fmt: skip
        assert status == 200
        assert took < 10.0  # generous: correctness (served at all), not speed
        assert closed == [500, 20], closed
        assert httpx.post(srv.url + "/predict", json=TEXTS, headers={"x-api-key": KEYS[1]}).status_code == 200
    finally:
        code = srv.terminate()
    out = srv.output()
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
