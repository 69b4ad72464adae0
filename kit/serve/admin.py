"""The admin side of `kit serve`: /healthz, /readyz and /metrics routes, the admin app on serve.admin_port, and the
runner that serves the API and admin apps in one process (one event loop, two uvicorn servers)."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from kit.core.errors import KitError
from kit.core.params import ServeParams
from kit.serve.drain import DrainFlag, DrainingServer, QuietServer, guarded_protocol
from kit.serve.telemetry import CONTENT_TYPE_LATEST, ObserveMiddleware

if TYPE_CHECKING:
    from kit.serve.app import _State

__all__ = ["add_probe_routes", "add_metrics_route", "create_admin_app", "serve_forever"]


def add_probe_routes(app: FastAPI, st: _State) -> None:
    """GET /healthz (liveness) and /readyz (loaded, warm and not draining) on `app`."""

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {}})
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded and warmed up, and the server is not shutting down."""
        meta = st.meta
        if st.ready and not st.draining:
            return JSONResponse({"status": "ready", "model_version": meta.version, "model_variant": meta.variant})
        status = "draining" if st.draining else "failed" if st.error else "loading"
        body = {"status": status} | ({"error": st.error} if st.error else {})
        return JSONResponse(body, status_code=503)


def add_metrics_route(app: FastAPI, st: _State) -> None:
    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        """Prometheus metrics."""
        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_admin_app(api: FastAPI) -> FastAPI:
    """The admin app of an API app made by create_app: probes and metrics of the same state, no lifespan."""
    st: _State = api.state.kit
    admin = FastAPI(title="kit model server (admin)", version=st.meta.version, openapi_url=None, docs_url=None,
                    redoc_url=None, redirect_slashes=False)  # fmt: skip
    admin.state.kit = st
    add_probe_routes(admin, st)
    add_metrics_route(admin, st)
    routes = frozenset(getattr(r, "path", "") for r in admin.routes)
    admin.add_middleware(ObserveMiddleware, metrics=st.metrics, routes=routes, access_log=st.params.access_log)
    return admin


def _config(app: FastAPI, p: ServeParams, host: str, port: int, drain: DrainFlag, api: bool) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(p.header_timeout_s, p.max_header_bytes, drain),
        access_log=False,  # ours is JSON, with n_texts
        timeout_graceful_shutdown=math.ceil(p.graceful_timeout_s),  # uvicorn takes whole seconds
        timeout_keep_alive=max(1, math.ceil(p.timeout_keep_alive_s)),
        limit_concurrency=p.limit_concurrency,
        backlog=p.backlog,
        h11_max_incomplete_event_size=p.max_header_bytes,
        lifespan="on" if api else "off",
        log_level="info",
        server_header=False,
    )


def serve_forever(api: FastAPI, host: str, port: int) -> None:
    """Serve `api` (and its admin app when serve.admin_port is set) until SIGTERM/SIGINT; the admin server stays up
    through the API server's drain (probes and metrics keep answering) and stops after it.

    Raises:
        KitError: the admin port could not be bound.
    """
    st: _State = api.state.kit
    p = st.params
    drain = DrainFlag()
    server = DrainingServer(_config(api, p, host, port, drain, api=True), drain, p.drain_s, st.begin_drain)
    # uvicorn.Config configured its loggers; send ours (lifecycle events) to the same stderr handler.
    log = logging.getLogger("kit.serve")
    log.handlers, log.propagate = logging.getLogger("uvicorn").handlers, False
    log.setLevel(logging.INFO)
    admin = None
    if p.admin_port is not None:
        admin = QuietServer(_config(create_admin_app(api), p, host, p.admin_port, DrainFlag(), api=False))

    def stop() -> None:
        server.should_exit = True

    st.on_fatal = stop

    async def main() -> None:
        admin_task = asyncio.create_task(admin.serve()) if admin else None
        if admin is not None and admin_task is not None:
            while not admin.started and not admin_task.done():
                await asyncio.sleep(0.01)
            if admin_task.done():  # uvicorn logged the bind error and exited
                raise KitError(f"serve.admin_port: could not listen on {host}:{p.admin_port}")
        try:
            await server.serve()
        finally:
            if admin is not None and admin_task is not None:
                admin.should_exit = True
                await admin_task

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        try:
            runner.run(main())
        except SystemExit:  # uvicorn exits when it cannot bind
            ports = f"{port}" + (f" and admin port {p.admin_port}" if p.admin_port is not None else "")
            raise KitError(f"kit serve: could not listen on {host} port {ports} (the error above says which)") from None
