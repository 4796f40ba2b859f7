"""Real uvicorn servers on loopback for service tests: in-process (a thread) or a subprocess."""

from __future__ import annotations

import contextlib
import os
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
from voxguard.engine import LocalEngine
from voxguard.metrics import Metrics
from voxguard.service import PredictionService
from voxguard.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving a prebuilt service in a background thread (models shared across tests)."""

    def __init__(self, settings: Settings, detectors: dict, **uvicorn_options) -> None:
        metrics = Metrics()
        self.service = PredictionService(settings, LocalEngine(settings, detectors, metrics), metrics)
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

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def live_server(detectors: dict, **settings) -> Iterator[LiveServer]:
    """A test server whose deadline is generous unless the test sets one: a burst of CPU inference on
    a slow shared CI machine must not turn into 504s in tests that are not about deadlines."""
    options = {k: settings.pop(k) for k in list(settings) if k.startswith("ssl_")}
    settings.setdefault("request_timeout_s", 300.0)
    with LiveServer(Settings(**settings), detectors, **options) as server:
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
