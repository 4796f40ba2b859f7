"""One HTTP process: the app under uvicorn with a drain-first shutdown, and the listening socket it is
handed (claimed before the models load)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from .. import address
from ..process_tuning import settle_gc
from ..settings import HttpSettings
from ..setup_errors import SetupError

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, refuse new work with 503 at once but keep listening until the queued work is
    done; only then let uvicorn stop accepting connections and finish.

    uvicorn alone closes its listening socket at the signal, so a request that arrives during the drain
    (a load balancer has not yet noticed ``/ready`` turning 503) meets a refused connection. Staying open
    turns it into a clean 503 with ``Retry-After`` that the balancer retries on another replica. The
    drain ends when the batcher is idle or after ``drain_timeout_s``; a second signal ends it at once
    (uvicorn's own shutdown follows, which a further SIGINT forces).

    With ``url``, it logs the URL it serves once it listens; with ``address_file``, the address it
    listens on is written there and removed when it stops (see ``voxguard.address``). Of several
    front-ends on one port, only one does either, so the URL is logged once.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        drain_timeout_s: float,
        url: str | None,
        address_file: Path | None = None,
    ) -> None:
        super().__init__(config)
        self._fastapi = app
        self._drain_timeout_s = drain_timeout_s
        self._drain_deadline: float | None = None
        self._url = url
        self._address_file = address_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        if self._url is not None:
            logger.info(
                "serving %s (Swagger UI at %s/docs, the web page at %s/)", self._url, self._url, self._url
            )
        if self._address_file is not None:
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
        service.admission.stop()  # new requests get 503 shutting_down; admitted ones are answered
        # Long files get deadlines past request_timeout_s (see PredictionService.deadline): wait for
        # the latest one admitted, so they are answered rather than cut off.
        latest = service.admission.latest_deadline + 1.0
        self._drain_deadline = max(time.monotonic() + self._drain_timeout_s, latest)
        logger.info("signal %s: draining (new requests get 503, still listening)", sig)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and not self.should_exit:
            if self._fastapi.state.service.idle:
                logger.info("queued work done: closing the listener")
                self.should_exit = True
            elif time.monotonic() >= self._drain_deadline:
                logger.warning("drain still busy past the last admitted deadline: shutting down anyway")
                self.should_exit = True
        return await super().on_tick(counter)


# After the drain, open connections only have answers to send that are already computed.
_CLOSE_TIMEOUT_S = 10


def drain_timeout_s(http: HttpSettings) -> float:
    """Every admitted window is scored, or past its deadline and dropped, by ``request_timeout_s``
    plus its request's allowance; the drain waits at least this long and at most until the latest
    admitted deadline."""
    return http.request_timeout_s + 1.0


def shutdown_budget_s(http: HttpSettings) -> float:
    """The time from SIGTERM to exit for requests whose windows fit the base deadline (on a GPU, any
    file: its allowance is about 2 ms a window); a supervisor's grace period (compose
    ``stop_grace_period``, Kubernetes ``terminationGracePeriodSeconds``) must be longer. A long file
    on a CPU extends the drain by its allowance."""
    return drain_timeout_s(http) + _CLOSE_TIMEOUT_S


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def bind_listener(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """Claim ``host:port`` now, before minutes of model loading, and fail at once if it is taken.

    The socket is bound but not yet listening: until uvicorn takes it over, a connection is refused as
    if nothing were there, and no other process can claim the port meanwhile. ``shared`` sockets
    (``SO_REUSEPORT``) are the front-ends' own listeners on one port, among which the kernel spreads
    new connections evenly (see ``voxguard.processes.supervisor``).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart past TIME_WAIT
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        where = f"port {port} on {host}"
        if exc.errno == errno.EADDRINUSE:
            raise SetupError(
                f"{where} is already in use (another voxguard, or another program).",
                "stop it, or choose another port with --port (VOXGUARD_PORT)",
            ) from None
        if exc.errno == errno.EACCES:
            raise SetupError(
                f"{where}: permission denied (ports below 1024 need privileges).", "use a port above 1023"
            ) from None
        raise SetupError(
            f"cannot listen on {where}: {exc.strerror or exc}.",
            "--host (VOXGUARD_HOST) must be an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None
    sock.set_inheritable(True)
    return sock


def exposure_warning(http: HttpSettings, port: int) -> str | None:
    """What to say when the service is reachable from other machines and anyone may use it."""
    if is_loopback(http.host) or http.api_keys:
        return None
    return (
        f"listening on {http.host} without API keys: anyone who can reach port {port} can use the "
        "service. Set VOXGUARD_API_KEYS, or serve on 127.0.0.1 (the default)"
    )


def public_url(http: HttpSettings, port: int) -> str:
    """The URL to open: an any-address listener is reached as localhost from this machine."""
    scheme = "https" if http.certfile else "http"
    host = "localhost" if http.host in ("0.0.0.0", "::", "[::]", "") else http.host
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def run_uvicorn(http: HttpSettings, app: FastAPI, listener: socket.socket, announce: bool) -> None:
    """Serve ``app`` on ``listener`` with the drain-first shutdown; ``announce`` (one process of the
    server) logs the URL and writes the address file."""
    config = uvicorn.Config(
        app,
        ssl_certfile=str(http.certfile) if http.certfile else None,
        ssl_keyfile=str(http.keyfile) if http.keyfile else None,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=_CLOSE_TIMEOUT_S,
    )
    url = public_url(http, listener.getsockname()[1])
    settle_gc()
    DrainingServer(
        config,
        app,
        drain_timeout_s=drain_timeout_s(http),
        url=url if announce else None,
        address_file=http.address_file if announce else None,
    ).run(sockets=[listener])
