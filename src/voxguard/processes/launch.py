"""``voxguard serve``: claim the port, choose the wiring and start it.

One process (the in-process wiring under ``voxguard.processes.server``), or, with more than one
front-end, a supervisor (``voxguard.processes.supervisor``) over an engine process and that many HTTP
front-end processes. The parts of either wiring are built by ``voxguard.serving.wiring``.
"""

from __future__ import annotations

import logging

from ..api.app import create_app
from ..inference import resolve_device
from ..process_tuning import tune_allocator
from ..serving import wiring
from ..serving.telemetry import Metrics
from ..settings import Settings
from .server import bind_listener, exposure_warning, run_uvicorn
from .supervisor import Supervisor

logger = logging.getLogger(__name__)


def frontend_count(settings: Settings) -> int:
    """``settings.frontends``, or for 0 what measured faster (docs/scaling.md): one process when the
    models run on the CPU, whose forwards want every core; two front-ends when an accelerator runs
    them and one process's host side is the limit."""
    if settings.frontends:
        return settings.frontends
    if settings.engine == "simulated":
        return 2
    return 1 if resolve_device(settings.device).type == "cpu" else 2


def serve(settings: Settings) -> int:
    """Claim the port, load and warm the models, then serve until a signal drains the server; the exit
    status. One process, or with more than one front-end (``frontend_count``) an engine process and
    that many HTTP front-ends (``voxguard.processes.supervisor``).

    Every problem a person can fix (port taken, no such device, missing weights) is raised as a
    :class:`SetupError` before uvicorn starts, so the CLI reports it in one line.
    """
    listener = bind_listener(settings.host, settings.port)
    port = listener.getsockname()[1]
    if warning := exposure_warning(settings.http, port):
        logger.warning("%s", warning)
    settings = settings.model_copy(update={"frontends": frontend_count(settings)})
    if settings.frontends > 1:
        # The exclusive claim proved the port free; the supervisor holds it from now on with a shared
        # claim that each front-end's own listener joins.
        listener.close()
        settings = settings.model_copy(update={"port": port})
        return Supervisor(settings, bind_listener(settings.host, port, shared=True)).run()
    if settings.allocator_tuning:
        tune_allocator()  # before uvicorn and the executors start threads that would get arenas of their own
    try:
        service = wiring.in_process(settings, Metrics())
    except BaseException:
        listener.close()
        raise
    run_uvicorn(settings.http, create_app(settings, service), listener, announce=True)
    return 0
