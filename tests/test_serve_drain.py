"""Drain under sustained load on a real `kit serve` process: 48 keep-alive clients, SIGTERM mid-load; no request that
began before the signal is lost, none gets a 5xx, responses during the drain say `Connection: close`, exit 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures_deploy import tiny_serving_dir
from tests.fixtures_drain import load_and_signal
from tests.fixtures_serve import ServerProcess


@pytest.fixture(scope="module")
def serving_dir() -> Path:
    return tiny_serving_dir()  # built once per test session, shared with the deploy tests


@pytest.mark.timeout(120)
@pytest.mark.parametrize("drain_s", [0.0, 1.0], ids=["no-window", "readiness-fail-window"])
def test_sigterm_under_keepalive_load_loses_nothing(serving_dir: Path, tmp_path: Path, drain_s: float) -> None:
    srv = ServerProcess(serving_dir, tmp_path, max_batch_size=16, access_log=False, drain_s=drain_s)
    readyz_during_window: list[int] = []
    try:
        srv.wait_ready()

        # A request whose head is half sent when the signal goes out, the rest once shutdown has begun (uvicorn
        # notices the signal within its 0.1 s tick): stock uvicorn sees that connection as idle and closes it, so
        # this request, begun before the signal, is lost (checked against the previous server: no reply at all).
        body = json.dumps({"texts": ["half sent before the signal"]}).encode()
        request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        half = socket.create_connection(("127.0.0.1", srv.port), timeout=30)

        def sigterm() -> None:
            half.sendall(request[:20])
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # well inside the drain's 1 s grace for a connection without a request in progress
            half.sendall(request[20:])
            if drain_s:  # inside the window the listener is open and readiness fails
                readyz_during_window.append(httpx.get(srv.url + "/readyz", timeout=5).status_code)

        res = asyncio.run(load_and_signal(srv.url, sigterm, clients=48, exited=lambda: srv.proc.poll() is not None))
        code = srv.proc.wait(60)
        reply = b""
        while chunk := half.recv(65536):
            reply += chunk
        half.close()
    finally:
        srv.terminate()
    out = srv.output()
    print(f"drain_s={drain_s}: {res.summary()}")
    assert len(res.before()) >= 48, res.summary()
    assert res.lost() == [], (res.summary(), res.lost()[:5])
    head = reply.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"connection: close" in head, reply[:300]
    assert res.five_xx() == [], res.five_xx()[:5]
    # Once the server has seen the signal, every answer closes its connection (clients reconnect elsewhere).
    late = res.answered_after(0.5)
    assert all(o.connection == "close" for o in late), [o for o in late if o.connection != "close"][:5]
    if drain_s:
        assert readyz_during_window == [503]
        assert late, f"the readiness-fail window answered nothing: {res.summary()}"
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
