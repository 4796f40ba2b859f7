"""The app factory: settings in, a FastAPI app out; models load and the worker starts in the lifespan."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..serving import wiring
from ..serving.service import PredictionService
from ..serving.telemetry import Metrics
from ..settings import Settings
from .auth import ApiKeyGuard
from .docs import install_docs
from .errors import install_error_handlers
from .openapi import document_keys
from .routes import api, probes
from .stream import router as stream_router
from .web import web_router

logger = logging.getLogger("voxguard.access")


class RequestLog:
    """One structured log line and the request metrics per HTTP request; sets ``X-Request-ID``.

    A request without an id of its own gets this process's random prefix and a counter: unique across
    processes and restarts like a UUID, without reading the system's random source per request.
    ``routes`` are the paths the metrics name; any other path is counted as "other"."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        headers = dict(scope.get("headers") or [])
        request_id = (
            headers.get(b"x-request-id", b"").decode("latin-1")[:64]
            or f"{self._prefix}{next(self._counter):08x}"
        )
        state = scope.setdefault("state", {})
        state.update(received_at=started, request_id=request_id, windows=0, batch_sizes=[])
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            route = path if path in self.routes else "other"
            if state.get("client_gone"):
                status = 499
            elapsed = time.monotonic() - started
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_latency.labels(route).observe(elapsed)
            logger.info(
                "request_id=%s method=%s route=%s status=%d windows=%d batch_sizes=%s total_ms=%.1f",
                request_id,
                scope.get("method", ""),
                route,
                status,
                state["windows"],
                ",".join(map(str, state["batch_sizes"])) or "-",
                elapsed * 1000.0,
            )


def create_app(settings: Settings | None = None, service: PredictionService | None = None) -> FastAPI:
    """Build the app. Pass ``service`` to reuse already-loaded models (tests); else they load at start-up
    (``serving.wiring.in_process``). The app itself reads the HTTP section alone (``settings.http``, in
    ``app.state.http`` for the routes and the stream); the verdict rule is the service's."""
    settings = settings or Settings()
    http = settings.http
    metrics = service.metrics if service is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service
        if svc is None:
            svc = await asyncio.get_running_loop().run_in_executor(None, wiring.in_process, settings, metrics)
        await svc.start()
        app.state.service = svc
        logger.info("ready: models %s on %s", ", ".join(svc.models), svc.models[svc.default_model].device)
        try:
            yield
        finally:
            await svc.stop()
            logger.info("drained and stopped")

    app = FastAPI(
        title="voxguard",
        version=__version__,
        description=(
            "Voice-deepfake detection with AASIST. Upload speech, get **REAL** or **FAKE** with a "
            "probability, or **INCONCLUSIVE** (with the reason) when there is too little speech to judge. "
            "Errors are JSON `{code, detail}`. When the server has API keys "
            "(`VOXGUARD_API_KEYS`), press **Authorize** and enter one."
        ),
        lifespan=lifespan,
        docs_url=None,  # served offline by install_docs
        redoc_url=None,
        # Prometheus (/metrics) is voxguard's own telemetry; FastAPI's OpenTelemetry is opt-in because
        # it looks the global providers up on every request even when nothing is configured.
        telemetry=None if http.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.http = http
    app.state.metrics = metrics
    install_error_handlers(app)
    install_docs(app)
    app.include_router(api)
    app.include_router(probes)
    app.include_router(stream_router)
    app.include_router(web_router)
    guarded = frozenset(
        route.path
        for route in [*api.routes, *(probes.routes if http.protect_probes else [])]
        if http.api_keys
    )
    if guarded:
        app.add_middleware(ApiKeyGuard, keys=http.api_keys, paths=guarded)
    document_keys(app, guarded)
    if http.cors_origins:  # outside the key check: a browser's preflight carries no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=http.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
        )
    known = frozenset(route.path for route in [*api.routes, *probes.routes])  # the rest is "other"
    app.add_middleware(RequestLog, metrics=metrics, routes=known)
    return app
