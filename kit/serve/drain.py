"""Connection handling of `kit serve`: an HTTP protocol that closes connections whose request head is slow or oversized
and never drops a request already on the wire at shutdown, and a uvicorn server that drains in that order on SIGTERM.

Why requests were lost at shutdown before: uvicorn closes every connection it sees as idle the moment it shuts down.
Under keep-alive load a connection looks idle between one response and the next request's parse, so a request whose
bytes were sent (even well before SIGTERM, when the event loop was busy) hit a closed socket. Here an idle connection
instead gets IDLE_GRACE_S to deliver its next request, which is answered with `Connection: close`; busy connections
finish their response and close; from SIGTERM on, every response says `Connection: close` so clients reconnect
elsewhere (or, after an optional readiness-fail window, get a clean connection refusal, which is safe to retry)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["IDLE_GRACE_S", "DrainFlag", "guarded_protocol", "DrainingServer", "QuietServer"]

log = logging.getLogger("kit.serve")

# At shutdown, how long a connection with no request in progress may still deliver one. A request already sent
# reaches the server in well under a millisecond on a pod network; the margin covers an event loop busy with a batch.
IDLE_GRACE_S = 1.0


class DrainFlag:
    """Set once on SIGTERM: from then on every response carries `Connection: close`."""

    def __init__(self) -> None:
        self.active = False


class _GuardedProtocol(HttpToolsProtocol):
    """httptools' protocol plus a deadline on the request head and a byte limit on it, and a graceful `shutdown`."""

    head_timeout_s: float = 10.0
    max_head_bytes: int = 65536
    drain: DrainFlag = DrainFlag()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._closing = False  # set by shutdown: the next response is the last, signal or not
        super().connection_made(transport)
        self._arm_head(self.head_timeout_s)

    def _arm_head(self, seconds: float) -> None:
        self._cancel_head()
        self._head_timer = self.loop.call_later(seconds, self._head_expired)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _head_expired(self) -> None:
        # A request whose head completed meanwhile is being served (a pipelined one, or a slow response): leave it.
        self._head_timer = None
        if not self._busy() and not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_head_bytes:
            # Raised inside a parser callback: uvicorn answers 400 and closes (httptools has no limit of its own).
            raise ValueError(f"request head over {self.max_head_bytes} bytes")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head()
        super().on_headers_complete()
        if (self.drain.active or self._closing) and self.cycle is not None:
            self.cycle.keep_alive = False  # uvicorn then sends `Connection: close` and closes after the response

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head(self.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        super().connection_lost(exc)

    def mark_closing(self) -> None:
        """The response in progress (if any) is the connection's last."""
        if self._busy():
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        self._closing = True
        if self._busy():
            self.cycle.keep_alive = False
        elif not self.transport.is_closing():
            self._arm_head(IDLE_GRACE_S)  # instead of closing now, under a request that may be on its way


def guarded_protocol(head_timeout_s: float, max_head_bytes: int, drain: DrainFlag) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), with these limits and this drain flag."""
    attrs = {"head_timeout_s": head_timeout_s, "max_head_bytes": max_head_bytes, "drain": drain}
    return type("KitHttpProtocol", (_GuardedProtocol,), attrs)


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the admin server, stopped by the API server's owner."""

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


class DrainingServer(uvicorn.Server):
    """The API server: on SIGTERM marks responses `Connection: close`, keeps accepting for `drain_s` (readiness
    fails meanwhile, through `on_signal`), then closes the listener and lets each connection end after its request."""

    def __init__(self, config: uvicorn.Config, drain: DrainFlag, drain_s: float, on_signal: Callable[[], None]):
        super().__init__(config)
        self.drain, self.drain_s, self.on_signal = drain, drain_s, on_signal
        self.signal_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.signal_at is None:
            self.signal_at = time.monotonic()
            self.drain.active = True
            self.on_signal()
            if self._loop is not None:  # responses already being computed are the last of their connection too
                self._loop.call_soon_threadsafe(self._mark_all)
        super().handle_exit(sig, frame)

    def _mark_all(self) -> None:
        for conn in list(self.server_state.connections):
            if isinstance(conn, _GuardedProtocol):
                conn.mark_closing()

    async def shutdown(self, sockets: Any = None) -> None:
        if self.signal_at is not None and self.drain_s > 0:
            log.info("draining: readiness fails for %.1f s before the listener closes", self.drain_s)
            while not self.force_exit and time.monotonic() < self.signal_at + self.drain_s:
                await asyncio.sleep(0.05)
        self._mark_all()
        await super().shutdown(sockets)
