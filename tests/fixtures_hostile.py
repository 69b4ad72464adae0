"""Hostile input for a running model server, shared by the process test (test_serve) and the image test
(test_container): malformed, oversized and mutated requests, broken HTTP, and valid traffic in between."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kit.core.params import ServeParams
from tests.fixtures_serve import SAMPLE_TEXTS

__all__ = ["JSON", "parse_metrics", "hostile_requests", "is_refusal_or_valid", "HostileRun", "run_hostile"]

JSON = {"content-type": "application/json"}
# Checks a 200 answer: (predictions, the texts sent); raises AssertionError when they are wrong.
Check = Callable[[list[dict], list[str]], None]


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Flatten a Prometheus exposition into {(sample name, sorted labels): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def hostile_requests(rng: random.Random, max_texts: int, max_chars: int, max_body: int) -> list[tuple]:
    """(label, method, path, headers, body) of requests a server must refuse with a 4xx."""
    j = JSON
    dump = lambda obj: json.dumps(obj).encode()  # noqa: E731
    word = lambda: "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 20)))  # noqa: E731
    base = [
        ("bad json", j, b'{"texts": ['), ("bad json", j, b"not json"), ("bad json", j, b"{texts: []}"),
        ("bad json", j, b"{'texts': ['a']}"), ("bad json", j, b'{"texts": ["a"]}}'),
        ("bad json", j, b'{"texts":["a"],}'), ("bad json", j, b"NaN"), ("bom", j, '\ufeff{"texts":["a"]}'.encode()),
        ("raw nul in string", j, b'{"texts":["a\x00b"]}'),
        ("deep nesting", j, b"[" * 40_000), ("deep nesting", j, b'{"texts":' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
        ("huge int", j, b'{"texts":[' + b"9" * 5000 + b"]}"), ("huge float", j, b'{"texts":[1e99999]}'),
        ("missing body", j, b""), ("blank body", j, b"   \n"),
        ("invalid utf8", j, b'{"texts":["\xff\xfe"]}'), ("invalid utf8", j, b'{"texts":["\xc0\xaf"]}'),
        ("invalid utf8", j, b'{"texts":["\xe2\x82"]}'), ("invalid utf8", j, b'{"texts":["\xed\xa0\x80"]}'),
        ("lone surrogate", j, b'{"texts":["\\ud800"]}'), ("lone surrogate", j, b'{"texts":["ok","x\\udfffy"]}'),
        ("empty list", j, b'{"texts":[]}'), ("missing key", j, b"{}"), ("wrong key", j, b'{"text":["a"]}'),
        ("extra key", j, b'{"texts":["a"],"model":"x"}'),
        ("content type", {"content-type": "text/plain"}, b'{"texts":["a"]}'), ("content type", {}, b'{"texts":["a"]}'),
        ("content type", {"content-type": "application/x-www-form-urlencoded"}, b"texts=a"),
        ("content type", {"content-type": "multipart/form-data; boundary=x"}, b"--x--"),
        ("content type", {"content-type": "application/json; charset=latin-1"}, b'{"texts":["a"]}'),
        ("content type", {"content-type": "application/xml"}, b"<texts/>"),
        ("too many texts", j, dump({"texts": ["a"] * (max_texts + 1)})),
        ("too many texts", j, dump({"texts": [""] * 10_000})),
        ("too long text", j, dump({"texts": ["ok", "x" * (max_chars + 1)]})),
        ("too long text", j, dump({"texts": ["\U0001f600" * (max_chars + 1)]})),
        ("too large body", j, dump({"texts": ["y" * (max_body + 10)]})),
        ("too large body", j, dump({"texts": ["z" * 100] * (max_body // 50)})),
    ]  # fmt: skip
    for v in (1, 1.5, "a", None, True, {}, {"a": 1}):
        base.append(("texts type", j, dump({"texts": v})))
    for v in (1, 1.5, None, True, {}, {"a": 1}, ["nested"], [["deeper"]]):
        base.append(("item type", j, dump({"texts": ["fine", v]})))
    for v in ([], [{"texts": ["a"]}], "texts", 42, None, True):
        base.append(("top-level type", j, dump(v)))
    reqs = [(label, "POST", "/predict", h, b) for label, h, b in base]
    reqs += [("method", m, "/predict", j, b'{"texts":["a"]}') for m in ("GET", "PUT", "DELETE", "PATCH")]
    paths = ("/", "/predict/", "/predictx", "/%00", "/" + "a" * 3000)
    reqs += [("path", "POST", p, j, b'{"texts":["a"]}') for p in paths]
    # Mutations: random truncation and byte flips of a valid body, random JSON values, random junk.
    valid = dump({"texts": [word() for _ in range(3)]})
    for _ in range(120):
        k = rng.randint(1, len(valid) - 1)
        reqs.append(("truncated", "POST", "/predict", j, valid[:k]))
    for _ in range(60):
        b = bytearray(valid)
        for _ in range(3):
            b[rng.randrange(len(b))] = rng.choice(b'\x00\xff{}[]",:\\')
        reqs.append(("flipped", "POST", "/predict", j, bytes(b)))
    for _ in range(60):
        reqs.append(("junk", "POST", "/predict", j, bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))))
    return reqs


def is_refusal_or_valid(status: int, body: bytes) -> bool:
    """A mutated body may still be valid JSON with texts; then 200 is right. Any 4xx must carry a JSON error."""
    if status == 200:
        return True
    return 400 <= status < 500 and isinstance(json.loads(body).get("error"), str)


@dataclass
class HostileRun:
    """How many hostile and valid requests were sent, for checks on the server's own log."""

    n_sent: int
    n_valid: int


def _sequential(client: httpx.Client, hostile: list[tuple], rng: random.Random, p: ServeParams, check: Check) -> int:
    """Every hostile request in turn, with a valid one every 8th; returns the number of valid ones."""
    n_valid = 0
    for i, (label, method, path, headers, body) in enumerate(hostile):
        r = client.request(method, path, headers=headers, content=body)
        assert r.status_code < 500, (label, body[:100], r.status_code, r.text)
        assert is_refusal_or_valid(r.status_code, r.content), (label, body[:100], r.status_code, r.text)
        if label not in ("truncated", "flipped", "junk"):
            assert r.status_code >= 400, (label, body[:100], r.text)
        if i % 8 == 0:  # valid traffic in between, including NUL bytes, emoji and the length limit
            texts = [
                rng.choice(SAMPLE_TEXTS) + " \x00 " + "🙂" * rng.randint(0, 5),
                "a" * p.max_chars_per_text,
                f"n{i}",
            ]
            ok = client.post("/predict", json={"texts": texts})
            assert ok.status_code == 200, ok.text
            check(ok.json()["predictions"], texts)
            n_valid += 1
    # A body streamed in chunks (no Content-Length) is cut off at the limit too.
    chunks = (b'{"texts":["' + b"q" * 8192 for _ in range(p.max_body_bytes // 8192 + 2))
    r = client.post("/predict", headers=JSON, content=chunks)
    assert r.status_code == 413, r.text
    assert r.json()["error"].startswith("body is more than")
    # Specific messages say what is wrong.
    n = p.max_chars_per_text
    r = client.post("/predict", json={"texts": ["ok"] * 3 + ["x" * (n + 1)]})
    assert r.json() == {"error": f"texts[3]: longer than {n} characters ({n + 1})"}
    r = client.post("/predict", json={"texts": ["a", 7]})
    assert r.status_code == 422 and r.json() == {"error": "texts[1]: must be a string, got number"}
    return n_valid


def _broken_http(host: str, port: int) -> None:
    """Broken HTTP at the socket level: the server answers or closes, never with a 5xx."""
    for raw in (b"GARBAGE\r\n\r\n", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{",  # then hang up mid-body
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"h" * 70_000 + b"\r\n\r\n"):  # fmt: skip
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            try:
                reply = s.recv(100)
            except (ConnectionResetError, TimeoutError):
                reply = b""
            assert not reply.startswith(b"HTTP/1.1 5"), reply


def run_hostile(
    url: str,
    params: ServeParams,
    check: Check,
    seed: int = 0,
    *,
    headers: dict[str, str] | None = None,
    admin_url: str | None = None,
) -> HostileRun:
    """Send the hostile set to a ready server at `url`, then a concurrent good/bad mix and broken HTTP; the server
    must refuse every bad request with a 4xx and a JSON error, answer every valid one (checked by `check`), and end
    up alive and ready with no 5xx but /readyz's while loading.

    Args:
        url: the server's base URL (http://HOST:PORT).
        params: the serve params the server runs with (its request limits).
        check: verifies the predictions of each valid request.
        seed: random seed of the mutations and the valid texts.
        headers: sent with every request (an API key when the server has auth on).
        admin_url: where /metrics is (the admin port); default `url`.
    """
    rng = random.Random(seed)
    p = params
    hostile = hostile_requests(rng, p.max_texts_per_request, p.max_chars_per_text, p.max_body_bytes)
    rng.shuffle(hostile)
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        n_valid = _sequential(client, hostile, rng, p, check)
    assert len(hostile) >= 300 and n_valid >= 30

    # Concurrent mix: bad requests in flight beside good ones (they share batches' timing, never their fate).
    async def mixed():
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as c:
            good = [[f"good {k}", rng.choice(SAMPLE_TEXTS)] for k in range(40)]
            bad = [b[4] for b in hostile[:40]]
            tasks = [c.post("/predict", json={"texts": t}) for t in good]
            tasks += [c.post("/predict", headers=JSON, content=b) for b in bad]
            res = await asyncio.gather(*tasks)
            return good, res[:40], res[40:]

    good, good_res, bad_res = asyncio.run(mixed())
    for texts, r in zip(good, good_res, strict=True):
        assert r.status_code == 200
        check(r.json()["predictions"], texts)
    assert all(r.status_code < 500 for r in bad_res)

    parsed = httpx.URL(url)
    _broken_http(parsed.host, parsed.port or 80)
    assert httpx.get(url + "/healthz").json() == {"status": "alive"}
    assert httpx.get(url + "/readyz").status_code == 200
    metrics = httpx.get((admin_url or url) + "/metrics")
    assert metrics.status_code == 200, metrics.text
    final = parse_metrics(metrics.text)
    fives = [k for k in final if k[0] == "kit_serve_requests_total" and dict(k[1])["status"][0] == "5"]
    assert all(dict(k[1])["route"] == "/readyz" for k in fives), fives  # 503 while loading is by design
    return HostileRun(len(hostile), n_valid)
