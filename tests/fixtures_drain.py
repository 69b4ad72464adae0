"""Load-and-signal helper for drain tests: N keep-alive clients each keep one single-text POST /predict in flight
against a base URL, a callable sends the stop signal mid-load, and every request's start, end and fate is recorded.

Reused by the container tests (podman): the server may be a local process or a container, the signal any callable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Outcome", "DrainResult", "load_and_signal"]


@dataclass
class Outcome:
    """One request: when it began and ended (monotonic seconds), its status (None: transport error) and more."""

    client: int
    began: float
    ended: float
    status: int | None
    connection: str = ""  # the response's Connection header, lower case
    error: str = ""  # the transport error's class and message when status is None


@dataclass
class DrainResult:
    signal_at: float
    outcomes: list[Outcome] = field(default_factory=list)

    def before(self) -> list[Outcome]:
        """Requests that began before the signal was sent."""
        return [o for o in self.outcomes if o.began < self.signal_at]

    def lost(self) -> list[Outcome]:
        """Requests that began before the signal and ended without a response."""
        return [o for o in self.before() if o.status is None]

    def five_xx(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is not None and o.status >= 500]

    def answered_after(self, margin_s: float) -> list[Outcome]:
        """Answered requests that began at least `margin_s` after the signal (the server has seen it by then)."""
        return [o for o in self.outcomes if o.status is not None and o.began >= self.signal_at + margin_s]

    def summary(self) -> str:
        b = self.before()
        after = [o for o in self.outcomes if o.began >= self.signal_at]
        lat = sorted(o.ended - o.began for o in self.outcomes if o.status == 200)
        p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")
        return (f"{len(self.outcomes)} requests, {len(b)} began before the signal ({len(self.lost())} lost), "
                f"{len(after)} after ({sum(o.status is None for o in after)} refused), "
                f"{len(self.five_xx())} 5xx, p99 {p99:.0f} ms")  # fmt: skip


async def _client(
    i: int, base_url: str, headers: dict[str, str], res: DrainResult, stop: Callable[[], bool], timeout_s: float
) -> None:
    import aiohttp

    # One keep-alive connection per client, as a pooled HTTP client holds. aiohttp, not httpx: its per-request CPU
    # is a fraction of httpx's, so the next request follows a response within a millisecond, as from a busy caller
    # (the window in which a server that closes "idle" keep-alive connections at shutdown loses requests).
    conn = aiohttp.TCPConnector(limit=1, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(base_url, connector=conn, timeout=timeout, headers=headers) as c:
        n = 0
        while not stop():
            began = time.monotonic()
            body = {"texts": [f"client {i} request {n}: how is the weather?"]}
            try:
                async with c.post("/predict", json=body) as r:
                    await r.read()
                    status, connection = r.status, r.headers.get("connection", "").lower()
            except (TimeoutError, aiohttp.ClientError) as exc:
                res.outcomes.append(Outcome(i, began, time.monotonic(), None, error=f"{type(exc).__name__}: {exc}"))
                if res.signal_at and began >= res.signal_at:
                    return  # the server stopped accepting: this client is done
                await asyncio.sleep(0.01)  # before the signal an error is recorded (and fails the test), not retried
                continue
            res.outcomes.append(Outcome(i, began, time.monotonic(), status, connection))
            n += 1


async def load_and_signal(
    base_url: str,
    send_signal: Callable[[], None],
    *,
    clients: int = 48,
    load_s: float = 1.0,
    after_s: float = 20.0,
    exited: Callable[[], bool] = lambda: False,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> DrainResult:
    """Run `clients` closed-loop clients, call `send_signal()` `load_s` after each has had an answer, keep loading until every client has
    been refused, `exited()` turns true, or `after_s` passed since the signal.

    Args:
        base_url: the server's API URL, e.g. http://127.0.0.1:8000.
        send_signal: sends SIGTERM (os.kill, `podman kill --signal TERM`, ...); called from the event loop thread.
        clients: concurrent keep-alive clients, one request in flight each.
        load_s: seconds of full load before the signal.
        after_s: longest load after the signal.
        exited: whether the server is gone (the clients then stop).
        headers: sent with every request (an API key, say).
        timeout_s: per-request timeout.

    Returns:
        Every request's outcome and the signal time; `lost()` are the requests the drain must never lose.
    """
    res = DrainResult(signal_at=0.0)
    deadline: list[float] = []
    stop = lambda: exited() or bool(deadline and time.monotonic() > deadline[0])  # noqa: E731
    tasks = [asyncio.create_task(_client(i, base_url, headers or {}, res, stop, timeout_s)) for i in range(clients)]
    # Clients take a while to start (sessions, first connections): the load counts as
    # sustained once every client has had an answer, then runs `load_s` more.
    warm_deadline = time.monotonic() + 60
    while len({o.client for o in res.outcomes if o.status is not None}) < clients:
        if time.monotonic() > warm_deadline or any(t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            raise AssertionError(f"not every client got an answer before the signal: {res.outcomes[:3]}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(load_s)
    res.signal_at = time.monotonic()
    await asyncio.to_thread(send_signal)
    deadline.append(res.signal_at + after_s)
    await asyncio.gather(*tasks)
    return res
