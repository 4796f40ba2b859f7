"""Run the app under uvicorn with a drain-first shutdown."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from .api.app import create_app
from .runtime import tune_allocator
from .settings import Settings

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, refuse new work with 503 at once, then let uvicorn finish in-flight requests.

    uvicorn alone stops listening and waits for open requests, but a request arriving on a kept-alive
    connection in that window would still be queued; marking the batcher first turns it into a
    clean 503 with ``Retry-After`` that a load balancer retries elsewhere.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._fastapi = app

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, except that a shutdown that drained cleanly exits 0 instead of re-raising the
        signal: supervisors then see a clean stop, and a failed drain still dies by the signal."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: object) -> None:
        service = getattr(self._fastapi.state, "service", None)
        if service is not None:
            service.batcher.stop_admitting()
            logger.info("signal %s: draining (new requests get 503)", sig)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


def serve(settings: Settings) -> None:
    if settings.allocator_tuning:
        tune_allocator()  # before uvicorn and the executors start threads that would get arenas of their own
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.certfile) if settings.certfile else None,
        ssl_keyfile=str(settings.keyfile) if settings.keyfile else None,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(30, int(settings.request_timeout_s) + 5),
    )
    DrainingServer(config, app).run()
