"""``VOXGUARD_FRONTENDS=N`` (N > 1): one engine process for the device and N HTTP front-end processes.

The supervisor (the process ``voxguard serve`` started) claims the port, starts the engine and waits
until its models are warm, then starts the front-ends. Each listens on the port with a socket of its own
(``SO_REUSEPORT``), so the kernel spreads new connections evenly over them; one shared listening socket
would let whichever front-end wakes first accept a whole burst of connections (asyncio accepts up to its
backlog at a time) and leave the other idle. Front-ends read, decode and level audio and hand windows to
the engine through shared memory (``voxguard.serving.shm``, ``voxguard.serving.channel``); the engine
batches every front-end's windows together. A process that dies is started again, and meanwhile
``/ready`` on any front-end says which one is missing. SIGTERM or SIGINT drains: the front-ends stop
admitting and answer what they admitted, then the engine finishes and stops. Metrics from every process
are summed by Prometheus's multi-process collector, in a folder shared by all of them.

``run_engine`` and ``run_frontend`` are the processes' entry points; what each one serves is built by
``voxguard.serving.wiring``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

from ..serving.shm import SharedFolder
from ..settings import Settings
from ..setup_errors import SetupError

logger = logging.getLogger(__name__)

_POLL_S = 0.1
_RESTART_DELAY_S = 0.5
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def child_setup(log_level: int, supervisor: int) -> None:
    """In a child process: log as the parent does, die with it, and leave signals to it (a terminal's
    Ctrl-C reaches the supervisor only, which drains the children in order)."""
    logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT)
    logging.getLogger("voxguard").setLevel(log_level)
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != supervisor:  # it died before prctl took effect (in a container it may be pid 1)
        os.kill(os.getpid(), signal.SIGTERM)


# The children's entry points import the serving stack (torch included: seconds) only after
# child_setup, so a Ctrl-C meanwhile reaches the supervisor alone: this module itself stays light.


def run_engine(settings: Settings, shared: SharedFolder, log_level: int, supervisor: int) -> None:
    """The engine process's entry point (``multiprocessing``, spawn): the models and the batcher,
    served to the front-ends by an :class:`~voxguard.serving.enginehost.EngineHost` until SIGTERM."""
    child_setup(log_level, supervisor)
    from ..process_tuning import settle_gc
    from ..serving import wiring
    from ..serving.telemetry import Metrics

    metrics = Metrics()
    try:
        host = wiring.engine_host(settings, shared, metrics)
    except SetupError as exc:
        logger.error("%s", exc)
        raise SystemExit(2) from None
    settle_gc()

    async def until_sigterm() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await host.run(stop)

    asyncio.run(until_sigterm())


def run_frontend(
    settings: Settings, shared: SharedFolder, index: int, log_level: int, supervisor: int
) -> None:
    """A front-end process's entry point: the whole HTTP app over a
    :class:`~voxguard.serving.remote.RemoteEngine`."""
    child_setup(log_level, supervisor)
    from ..api.app import create_app
    from ..serving import wiring
    from ..serving.telemetry import Metrics
    from .server import bind_listener, run_uvicorn

    try:
        listener = bind_listener(settings.host, settings.port, shared=True)
    except SetupError as exc:
        logger.error("front-end %d: %s", index, exc)
        raise SystemExit(2) from None
    service = wiring.frontend(settings, shared, index, Metrics())
    run_uvicorn(settings.http, create_app(settings, service), listener, announce=index == 0)


class Supervisor:
    def __init__(self, settings: Settings, listener: socket.socket) -> None:
        self.settings = settings
        self.listener = listener
        self.shared, self.board = SharedFolder.create(settings.frontends, len(settings.models))
        self.folder = self.shared.path
        _check_room(self.folder, settings)
        self.metrics_dir = self.folder / "metrics"
        self.metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)  # inherited by every child
        self.context = multiprocessing.get_context("spawn")
        self.log_level = logging.getLogger("voxguard").getEffectiveLevel()
        self.engine: BaseProcess | None = None
        self.frontends: list[BaseProcess | None] = [None] * settings.frontends
        self.stopping = False

    def _start_engine(self) -> BaseProcess:
        process = self.context.Process(
            target=run_engine,
            args=(self.settings, self.shared, self.log_level, os.getpid()),
            name="voxguard-engine",
        )
        process.start()
        logger.info("engine process %d started", process.pid)
        return process

    def _start_frontend(self, index: int) -> BaseProcess:
        process = self.context.Process(
            target=run_frontend,
            args=(self.settings, self.shared, index, self.log_level, os.getpid()),
            name=f"voxguard-frontend-{index}",
        )
        process.start()
        logger.info("front-end %d: process %d started", index, process.pid)
        return process

    def _wait_for_engine(self) -> None:
        """Until the engine's models are warm; a failed start is the user's problem to fix, in one line."""
        assert self.engine is not None
        while not self.board.engine_ready and not self.stopping:
            if not self.engine.is_alive():
                raise SetupError(
                    f"the engine process could not start (exit code {self.engine.exitcode}).",
                    "its log lines above say why",
                )
            time.sleep(_POLL_S)

    def run(self) -> int:
        """Serve until a signal, then drain; 0 when every process stopped cleanly."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.engine = self._start_engine()
            self._wait_for_engine()
            if not self.stopping:
                self.frontends = [self._start_frontend(i) for i in range(len(self.frontends))]
            while not self.stopping:
                self._restart_the_dead()
                time.sleep(_POLL_S)
            return self._drain()
        finally:
            for process in [self.engine, *self.frontends]:
                if process is not None and process.is_alive():
                    process.kill()
            shutil.rmtree(self.folder, ignore_errors=True)

    def _on_signal(self, sig: int, frame: object) -> None:
        if not self.stopping:
            logger.info("signal %s: draining %d front-ends, then the engine", sig, len(self.frontends))
            self.listener.close()  # no front-end will be started again; theirs listen while they drain
        self.stopping = True
        for process in self.frontends:  # a second signal ends their drain at once, as in one process
            if process is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]

    def _restart_the_dead(self) -> None:
        from prometheus_client import multiprocess

        for index, process in enumerate(self.frontends):
            if process is not None and not process.is_alive():
                logger.error(
                    "front-end %d (process %d) died with exit code %s; restarting",
                    index,
                    process.pid,
                    process.exitcode,
                )
                self.board.frontend_alive(index, False)
                multiprocess.mark_process_dead(process.pid, str(self.metrics_dir))
                _remove_slots(self.folder, index, process.pid)
                time.sleep(_RESTART_DELAY_S)
                if not self.stopping:
                    self.frontends[index] = self._start_frontend(index)
        if self.engine is not None and not self.engine.is_alive():
            logger.error(
                "engine process %d died with exit code %s; restarting", self.engine.pid, self.engine.exitcode
            )
            multiprocess.mark_process_dead(self.engine.pid, str(self.metrics_dir))
            time.sleep(_RESTART_DELAY_S)
            if not self.stopping:
                self.engine = self._start_engine()

    def _drain(self) -> int:
        codes = []
        for process in self.frontends:
            if process is not None:
                process.join()
                codes.append(process.exitcode)
        assert self.engine is not None
        if self.engine.is_alive():
            os.kill(self.engine.pid, signal.SIGTERM)  # type: ignore[arg-type]
        self.engine.join()
        codes.append(self.engine.exitcode)
        logger.info("all processes stopped (exit codes %s)", codes)
        return 0 if all(code == 0 for code in codes) else 1


def _check_room(folder: Path, settings: Settings) -> None:
    """Each front-end maps ``queue_size`` windows of shared memory; a container's small ``/dev/shm``
    (Docker's default is 64 MB) would kill a front-end with SIGBUS under load, so refuse now."""
    from ..audio.options import WINDOW

    need = settings.frontends * settings.queue_size * WINDOW * 4
    free = shutil.disk_usage(folder).free
    if free < need:
        shutil.rmtree(folder, ignore_errors=True)
        raise SetupError(
            f"{settings.frontends} front-ends need {need / 2**20:.0f} MB of shared memory for their "
            f"windows (VOXGUARD_QUEUE_SIZE={settings.queue_size} each) but {folder.parent} has "
            f"{free / 2**20:.0f} MB free.",
            "raise the container's shm_size, or lower VOXGUARD_QUEUE_SIZE or VOXGUARD_FRONTENDS",
        )


def _remove_slots(folder: Path, index: int, pid: int | None) -> None:
    (folder / f"frontend-{index}-{pid}.slots").unlink(missing_ok=True)
