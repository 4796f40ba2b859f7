"""Real uvicorn servers on loopback for service tests: in-process (a thread) or a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from voxguard.api.app import create_app
from voxguard.processes.server import bind_listener
from voxguard.serving import wiring
from voxguard.serving.service import PredictionService
from voxguard.serving.shm import SharedFolder
from voxguard.serving.telemetry import Metrics
from voxguard.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving a prebuilt service in a background thread (models shared across tests)."""

    def __init__(self, settings: Settings, detectors: dict, **uvicorn_options) -> None:
        self.service = wiring.in_process(settings, Metrics(), detectors)
        self.batcher = self.service.engine.batcher  # the one scoring, wherever the wiring puts it
        self.app = create_app(settings, self.service)
        self.port = free_port()
        scheme = "https" if "ssl_certfile" in uvicorn_options else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", **uvicorn_options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop_admitting(self) -> None:
        """What SIGTERM starts: new requests get 503, admitted ones are answered."""
        self.service.admission.stop()

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class SplitServer:
    """The split wiring (``voxguard.serving.wiring``) in one process, so tests can inject detectors: the
    engine host on an event loop of its own in a thread, and ``SPLIT_FRONTENDS`` uvicorn front-ends over
    a ``RemoteEngine`` in threads of their own, each listening on the port with its own ``SO_REUSEPORT``
    socket as front-end processes do. Windows go through the shared slots and the control socket as
    between processes. One registry serves every part, standing in for the summed multi-process
    metrics."""

    def __init__(self, settings: Settings, detectors: dict, **uvicorn_options) -> None:
        self.settings = settings.model_copy(update={"frontends": SPLIT_FRONTENDS})
        self.uvicorn_options = uvicorn_options
        self.metrics = Metrics()
        self.shared, self.board = SharedFolder.create(SPLIT_FRONTENDS, len(detectors))
        self.host = wiring.engine_host(self.settings, self.shared, self.metrics, detectors)
        self.batcher = self.host.engine.batcher
        self.port = free_port()
        scheme = "https" if "ssl_certfile" in uvicorn_options else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.engine_thread = threading.Thread(target=self._run_engine, daemon=True)
        self.servers: list[uvicorn.Server] = []
        self.threads: list[threading.Thread] = []
        self.services: list[PredictionService] = []

    def _run_engine(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stop = asyncio.Event()
        self.loop.run_until_complete(self.host.run(self.stop))

    def __enter__(self) -> SplitServer:
        self.engine_thread.start()
        _wait(lambda: self.board.engine_ready, self.engine_thread, "engine")
        claim = bind_listener("127.0.0.1", self.port, shared=True)  # the supervisor's
        for index in range(SPLIT_FRONTENDS):
            service = wiring.frontend(self.settings, self.shared, index, self.metrics)
            self.services.append(service)
            config = uvicorn.Config(
                create_app(self.settings, service), log_level="warning", **self.uvicorn_options
            )
            server = uvicorn.Server(config)
            own = bind_listener("127.0.0.1", self.port, shared=True)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [own]}, daemon=True)
            thread.start()
            _wait(lambda server=server: server.started, thread, f"front-end {index}")
            self.servers.append(server)
            self.threads.append(thread)
        claim.close()
        self.service = self.services[0]
        return self

    def stop_admitting(self) -> None:
        """What the supervisor's SIGTERM starts in every front-end."""
        for service in self.services:
            service.admission.stop()

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.should_exit = True
        for thread in self.threads:
            thread.join(timeout=30)
        self.loop.call_soon_threadsafe(self.stop.set)
        self.engine_thread.join(timeout=30)
        shutil.rmtree(self.shared.path, ignore_errors=True)


def _wait(condition, thread: threading.Thread, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"test server's {what} did not start")
        time.sleep(0.02)


# How live_server serves: "single" (one process's wiring) or "split" (the engine and front-ends
# wiring). tests/robustness/conftest.py runs the reliability suite in each mode in turn.
SPLIT_FRONTENDS = 2
MODE = "single"


@contextlib.contextmanager
def live_server(detectors: dict, **settings) -> Iterator[LiveServer | SplitServer]:
    """A test server whose deadline is generous unless the test sets one: a burst of CPU inference on
    a slow shared CI machine must not turn into 504s in tests that are not about deadlines."""
    options = {k: settings.pop(k) for k in list(settings) if k.startswith("ssl_")}
    settings.setdefault("request_timeout_s", 300.0)
    kind = SplitServer if MODE == "split" else LiveServer
    with kind(Settings(**settings), detectors, **options) as server:
        yield server


class ServerProcess:
    """``voxguard serve`` as a subprocess, for signals and the real command line."""

    def __init__(self, args: list[str], env: dict[str, str], scheme: str = "http") -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log = Path(env.get("TMPDIR", "/tmp")) / f"voxguard-serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxguard.cli", "serve", "--port", str(self.port), *args],
            env={**os.environ, **env},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, verify: object = True, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ready", verify=verify, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class PoisonedDetector:
    """The real detector, except that a batch containing a window that starts with POISON raises."""

    POISON = 0.123

    def __init__(self, detector) -> None:
        self._detector = detector

    def __getattr__(self, name: str):
        return getattr(self._detector, name)

    def scores(self, windows: np.ndarray) -> np.ndarray:
        if np.any(windows[:, 0] == np.float32(self.POISON)):
            raise RuntimeError("poisoned window")
        return self._detector.scores(windows)
