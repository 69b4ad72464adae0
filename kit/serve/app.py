"""The model server behind `kit serve`: FastAPI app (predict, health, readiness, metrics) over the micro-batcher,
with request limits, JSON access logs, an optional prediction log, OpenTelemetry tracing and graceful shutdown.
Never imports torch."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from kit.core.errors import KitError
from kit.core.params import ServeParams
from kit.serve.admin import add_metrics_route, add_probe_routes, serve_forever
from kit.serve.auth import api_key_dependency, read_keys
from kit.serve.batcher import Batched, MicroBatcher, ModelUnavailable
from kit.serve.model import ModelMeta, OnnxTextClassifier, read_model_dir
from kit.serve.recorder import REQUEST_ID_HEADER, PredictionRecorder, request_id
from kit.serve.telemetry import ObserveMiddleware, ServeMetrics, setup_access_log

__all__ = ["create_app", "run", "parse_texts", "RequestError", "PredictRequest", "PredictResponse"]

log = logging.getLogger("kit.serve")


class PredictRequest(BaseModel):
    """Body of POST /predict (documentation; the handler validates by hand to give exact error messages)."""

    texts: list[str] = Field(description="Texts to classify, at most serve.max_texts_per_request.")


class Prediction(BaseModel):
    label: str = Field(description="Most probable class.")
    score: float = Field(description="Its probability.")
    probs: dict[str, float] = Field(description="Probability of every class.")


class PredictResponse(BaseModel):
    model_version: str
    model_variant: str
    predictions: list[Prediction] = Field(description="One per text, in request order.")


class RequestError(Exception):
    """A client error: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def parse_texts(payload: Any, max_texts: int, max_chars: int) -> list[str]:
    """Validate a decoded JSON body and return its texts.

    Raises:
        RequestError: 422 naming the first problem, e.g. `texts[3]: longer than 2000 characters`.
    """
    if not isinstance(payload, dict):
        raise RequestError(422, f'body must be a JSON object like {{"texts": ["..."]}}, got {_json_type(payload)}')
    unknown = sorted(k for k in payload if k != "texts")
    if unknown:
        raise RequestError(422, f"unknown key {unknown[0][:50]!r}; the body takes only 'texts'")
    if "texts" not in payload:
        raise RequestError(422, "missing key 'texts'")
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, f"texts: must be an array of strings, got {_json_type(texts)}")
    if not texts:
        raise RequestError(422, "texts: must not be empty")
    if len(texts) > max_texts:
        raise RequestError(422, f"texts: {len(texts)} items, at most {max_texts} allowed per request")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RequestError(422, f"texts[{i}]: must be a string, got {_json_type(t)}")
        if len(t) > max_chars:
            raise RequestError(422, f"texts[{i}]: longer than {max_chars} characters ({len(t)})")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # a "\ud800" escape decodes to a lone surrogate, which is not text
            raise RequestError(422, f"texts[{i}]: contains a lone UTF-16 surrogate escape, not valid Unicode") from None
    return texts


async def _read_body(request: Request, limit: int) -> bytes:
    # Refuse by the declared length first, then count real bytes: a chunked or lying client cannot exceed the limit.
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {int(declared)} bytes, more than the {limit} allowed")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is more than the {limit} bytes allowed")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody will read the answer; record it as the client's fault, not a server error
        raise RequestError(400, "client disconnected before sending the whole body") from None
    return b"".join(chunks)


class _State:
    """Everything one app instance shares between requests, lifespan and signal handling."""

    def __init__(self, meta: ModelMeta, params: ServeParams, metrics: ServeMetrics):
        self.meta, self.params, self.metrics = meta, params, metrics
        # Rows of a model run: (probabilities, pooled embeddings, token figures), see OnnxTextClassifier.predict.
        self.batcher: MicroBatcher[tuple[np.ndarray | None, ...]] | None = None
        self.recorder: PredictionRecorder | None = None  # set once the model loads, when serve.prediction_log.enabled
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self.draining = False
        self.error: str | None = None
        self.on_fatal: Callable[[], None] | None = None  # set by run(): stop the server when the model cannot load
        self.tracer: Any = None
        self.tracer_provider: Any = None

    def begin_drain(self) -> None:
        """Shutdown started: report not ready and stop holding batches open (safe to call from a signal handler)."""
        self.draining = True
        self.metrics.ready.set(0)
        if self.loop is not None and self.batcher is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.batcher.flush_now)


def _setup_tracing(app: FastAPI, st: _State, span_processor: Any) -> None:
    # Imported only here: the SDK, exporter and instrumentation add modules to every cold start scale-to-zero pays for.
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    p = st.params
    provider = TracerProvider(resource=Resource.create({"service.name": p.otel_service_name}))
    if span_processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        span_processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=p.otel_endpoint))
    provider.add_span_processor(span_processor)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="healthz,readyz,metrics")
    st.tracer_provider = provider
    st.tracer = provider.get_tracer("kit.serve")


def _rid_header(request: Request) -> dict[str, str]:
    rid = getattr(request.state, "request_id", None)
    return {REQUEST_ID_HEADER: rid} if rid else {}


async def _submit(st: _State, texts: list[str]) -> Batched[tuple[np.ndarray | None, ...]]:
    """Run texts through the batcher, inside a `kit.predict` span when tracing (its attributes name the model and
    the micro-batch the texts ran in)."""
    assert st.batcher is not None
    if st.tracer is None:
        return await st.batcher.submit_batched(texts)
    attrs = {"kit.n_texts": len(texts), "kit.model_version": st.meta.version, "kit.model_variant": st.meta.variant}
    with st.tracer.start_as_current_span("kit.predict", attributes=attrs) as span:
        done = await st.batcher.submit_batched(texts)
        span.set_attribute("kit.batch_size", done.batch_size)
        return done


def create_app(model_dir: str | Path, params: ServeParams | None = None, *, span_processor: Any = None) -> FastAPI:
    """Build the server app; the model loads and warms up in the background once the app starts.

    Args:
        model_dir: the serving dir (model.onnx, tokenizer.json, labels.json, optional selection.json, serving.json).
        params: the `serve` section (None: defaults).
        span_processor: OpenTelemetry span processor used instead of the OTLP exporter when tracing is enabled (tests).

    Returns:
        The API app: POST /predict (behind API keys when serve.api_key_file is set), GET /healthz, /readyz, and
        /metrics only when serve.admin_port is None (else kit.serve.admin.create_admin_app serves it).

    Raises:
        ModelDirError: the dir lacks a required file or its metadata is malformed.
        KitError: serve.api_key_file cannot be read or holds no key.
    """
    p = params or ServeParams()
    meta = read_model_dir(model_dir, p.max_length)
    metrics = ServeMetrics(
        meta.labels,
        {"variant": meta.variant, "version": meta.version, "max_length": str(meta.max_length),
         "labels": ",".join(meta.labels), "model_dir": str(meta.model_dir)},
    )  # fmt: skip
    st = _State(meta, p, metrics)

    async def load_and_warm() -> None:
        loop = asyncio.get_running_loop()
        batcher = st.batcher
        assert batcher is not None  # lifespan creates it before scheduling this
        try:
            t0 = time.perf_counter()
            plog = p.prediction_log
            pooled = plog.enabled and plog.embeddings
            load = functools.partial(
                OnnxTextClassifier, meta, p.threads, pooled=pooled, counts=plog.enabled, spinning=p.ort_spinning
            )
            model = await loop.run_in_executor(batcher.executor, load)
            if plog.enabled:  # loads the tokenizer and starts the writer thread: off the event loop too
                count = metrics.observe_prediction_log
                start = functools.partial(PredictionRecorder.start, plog, meta.version, on_count=count)
                st.recorder = await loop.run_in_executor(batcher.executor, start)
            # Warm-up before reporting ready: first runs allocate arenas and pick kernels; timed runs over batch sizes
            # and lengths fit the batcher's run-cost model (its length buckets' batch sizes and its adaptive wait).
            calibration = await batcher.warm_up(model.run_tokens, model.filler, meta.max_length)
        except Exception as exc:
            st.error = f"model failed to load: {exc}"
            log.error("%s", st.error)
            batcher.fail(st.error)
            if st.on_fatal is not None:
                st.on_fatal()
            return
        batcher.start(model.run_tokens, calibration, tokenize=model.tokenize)
        st.ready = not st.draining
        metrics.ready.set(1 if st.ready else 0)
        log.info("model %s (%s) ready in %.2f s", meta.version, meta.variant, time.perf_counter() - t0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st.loop = asyncio.get_running_loop()
        st.ready, st.draining, st.error = False, False, None
        st.batcher = MicroBatcher[tuple[np.ndarray | None, ...]](
            p.max_batch_size,
            p.max_delay_ms / 1000,
            on_batch=metrics.observe_batch,
            on_queue=metrics.queue_depth.inc,
            wait=p.batch_wait,
            on_wait=metrics.batch_wait.set,
        )
        loader = asyncio.create_task(load_and_warm())
        try:
            yield
        finally:
            st.begin_drain()
            st.ready = False
            await loader
            await st.batcher.close()  # finishes anything still queued before the process exits
            if st.recorder is not None:  # after the batcher: the last answered requests are logged too
                await asyncio.to_thread(st.recorder.close)
                st.recorder = None
            if st.tracer_provider is not None:
                st.tracer_provider.shutdown()

    app = FastAPI(
        title="kit model server",
        version=meta.version,
        lifespan=lifespan,
        description=f"Text classification with labels {meta.labels}.",
        # FastAPI's native telemetry would follow any global OpenTelemetry provider; tracing here is opt-in through
        # serve.otel_enabled (the contrib instrumentor below), so switch the native one off: no per-request cost.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        redirect_slashes=False,  # "/predict/" is a 404 with a JSON error, not a redirect clients may not follow
    )
    app.state.kit = st

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=_rid_header(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    labels = meta.labels
    keys = read_keys(p.api_key_file) if p.api_key_file else None
    ok_types = ("application/json",)

    @app.post(
        "/predict",
        response_model=None,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": PredictRequest.model_json_schema()}}}},
        responses={200: {"model": PredictResponse}, 401: {}, 413: {}, 415: {}, 422: {}, 503: {}},
        dependencies=[Depends(api_key_dependency(keys))] if keys is not None else [],
    )  # fmt: skip
    async def predict(request: Request) -> Response:
        """Classify texts: `{"texts": ["..."]}` -> label, score and class probabilities per text.

        An `x-request-id` header (1-128 characters of A-Z a-z 0-9 . _ : -) names the request in the prediction log;
        without one the server makes one. Either way the response echoes it."""
        t0 = time.perf_counter()
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        if rid is None:
            raise RequestError(422, f"{REQUEST_ID_HEADER} header: must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        request.state.request_id = rid
        ctype = request.headers.get("content-type", "")
        media, _, rest = ctype.partition(";")
        media = media.strip().lower()
        if media not in ok_types and not (media.startswith("application/") and media.endswith("+json")):
            raise RequestError(415, f"content-type must be application/json, got {ctype[:100]!r}")
        if "charset" in rest.lower() and "utf-8" not in rest.lower().replace("utf8", "utf-8"):
            raise RequestError(415, f"JSON must be UTF-8, got {ctype[:100]!r}")
        body = await _read_body(request, p.max_body_bytes)
        if not body.strip():
            raise RequestError(400, 'request body is empty; send {"texts": ["..."]}')
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(400, f"body is not valid UTF-8 (byte {exc.start})") from None
        try:
            payload = json.loads(decoded)
        except ValueError as exc:
            raise RequestError(400, f"body is not valid JSON: {str(exc)[:200]}") from None
        except RecursionError:
            raise RequestError(400, "body is not valid JSON: nested too deeply") from None
        texts = parse_texts(payload, p.max_texts_per_request, p.max_chars_per_text)
        request.state.n_texts = len(texts)
        unavailable = {"retry-after": "5", REQUEST_ID_HEADER: rid}
        if st.batcher is None:  # the app was called without its lifespan (no model yet)
            return JSONResponse({"error": "model not loaded"}, status_code=503, headers=unavailable)
        try:
            done = await _submit(st, texts)
        except ModelUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=unavailable)
        probs, pooled, counts = done.rows
        assert probs is not None  # OnnxTextClassifier.predict always gives probabilities
        idx = probs.argmax(axis=1)
        conf = probs[np.arange(len(texts)), idx]
        top = [labels[i] for i in idx.tolist()]
        confidences = conf.tolist()
        metrics.observe_predictions(top, confidences)
        if st.recorder is not None:
            assert counts is not None  # a recording server's model counts tokens
            st.recorder.record(rid, texts, top, confidences, (time.perf_counter() - t0) * 1000, pooled, counts)
        rows = probs.round(6).tolist()
        out = {
            "model_version": meta.version,
            "model_variant": meta.variant,
            "predictions": [
                {"label": lab, "score": row[i], "probs": dict(zip(labels, row, strict=True))}
                for lab, i, row in zip(top, idx.tolist(), rows, strict=True)
            ],
        }
        answer = json.dumps(out, separators=(",", ":"))
        return Response(answer, media_type="application/json", headers={REQUEST_ID_HEADER: rid})

    add_probe_routes(app, st)
    if p.admin_port is None:  # one port: metrics beside the API (local runs); else only on the admin app
        add_metrics_route(app, st)

    if p.access_log:
        setup_access_log()
    if p.otel_enabled:
        _setup_tracing(app, st, span_processor)
    # Added last so it wraps the tracing middleware too: its latency includes everything but the server itself.
    app.add_middleware(
        ObserveMiddleware,
        metrics=metrics,
        routes=frozenset(getattr(r, "path", "") for r in app.routes),
        access_log=p.access_log,
    )
    return app


def run(
    model_dir: str | Path, params: ServeParams | None = None, *, host: str | None = None, port: int | None = None
) -> None:
    """Serve `model_dir` with uvicorn until SIGTERM/SIGINT; SIGTERM drains queued and in-flight requests, exit 0.

    Args:
        model_dir: the serving dir.
        params: the `serve` section (None: defaults).
        host, port: override params.

    Raises:
        ModelDirError: the dir is unusable.
        KitError: the model failed to load or warm up, the key file is unusable, or a port cannot be bound.
    """
    p = params or ServeParams()
    app = create_app(model_dir, p)
    st: _State = app.state.kit
    # uvicorn re-raises the signal after its graceful shutdown; with SIG_DFL that kills the process (exit 143).
    # A no-op handler as the "previous" one makes a completed drain end with exit 0, as orchestrators expect.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        serve_forever(app, host or p.host, port if port is not None else p.port)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if st.error:
        raise KitError(st.error)
