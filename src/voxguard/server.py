"""Run the app under uvicorn with a drain-first shutdown."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from . import address
from .api.app import create_app
from .runtime import tune_allocator
from .settings import Settings

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, refuse new work with 503 at once but keep listening until the queued work is
    done; only then let uvicorn stop accepting connections and finish.

    uvicorn alone closes its listening socket at the signal, so a request that arrives during the drain
    (a load balancer has not yet noticed ``/ready`` turning 503) meets a refused connection. Staying open
    turns it into a clean 503 with ``Retry-After`` that the balancer retries on another replica. The
    drain ends when the batcher is idle or after ``drain_timeout_s``; a second signal ends it at once
    (uvicorn's own shutdown follows, which a further SIGINT forces).

    With ``address_file``, the address it listens on is written there once it listens and removed when
    it stops (see ``voxguard.address``).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        drain_timeout_s: float,
        address_file: Path | None = None,
    ) -> None:
        super().__init__(config)
        self._fastapi = app
        self._drain_timeout_s = drain_timeout_s
        self._drain_deadline: float | None = None
        self._address_file = address_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._address_file is not None and self.started:
            listening = [sock for server in self.servers for sock in server.sockets]
            address.write(self._address_file, listening, tls=self.config.is_ssl)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._address_file is not None:
            self._address_file.unlink(missing_ok=True)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, except that a shutdown that drained cleanly exits 0 instead of re-raising the
        signal: supervisors then see a clean stop, and a failed drain still dies by the signal."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: object) -> None:
        service = getattr(self._fastapi.state, "service", None)
        if service is None or self._drain_deadline is not None:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            return
        self._captured_signals.append(sig)
        service.batcher.stop_admitting()
        self._drain_deadline = time.monotonic() + self._drain_timeout_s
        logger.info("signal %s: draining (new requests get 503, still listening)", sig)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and not self.should_exit:
            if self._fastapi.state.service.batcher.idle:
                logger.info("queued work done: closing the listener")
                self.should_exit = True
            elif time.monotonic() >= self._drain_deadline:
                logger.warning("drain still busy after %.0f s: shutting down anyway", self._drain_timeout_s)
                self.should_exit = True
        return await super().on_tick(counter)


# After the drain, open connections only have answers to send that are already computed.
_CLOSE_TIMEOUT_S = 10


def drain_timeout_s(settings: Settings) -> float:
    """Every admitted window is scored, or past its deadline and dropped, by ``request_timeout_s``."""
    return settings.request_timeout_s + 1.0


def shutdown_budget_s(settings: Settings) -> float:
    """The longest time from SIGTERM to exit; a supervisor's grace period (compose
    ``stop_grace_period``, Kubernetes ``terminationGracePeriodSeconds``) must be longer."""
    return drain_timeout_s(settings) + _CLOSE_TIMEOUT_S


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
        timeout_graceful_shutdown=_CLOSE_TIMEOUT_S,
    )
    DrainingServer(
        config, app, drain_timeout_s=drain_timeout_s(settings), address_file=settings.address_file
    ).run()
