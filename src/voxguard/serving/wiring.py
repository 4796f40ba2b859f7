"""How the serving parts are put together: one factory per wiring, and nowhere else.

``voxguard serve``, the processes of the split wiring and the tests (``tests/servers.py``) all build
their parts here, so a change to how the parts fit goes in one place.

**In process** (one front-end, and what ``create_app`` loads when given no service): a
:class:`PredictionService` over a :class:`LocalEngine`, the detectors and the batcher in this process.

**Split** (``VOXGUARD_FRONTENDS`` > 1): the parts meet in a ``shm.SharedFolder`` (window slots, the status
board, the control socket), which the supervisor creates. The engine process serves a ``LocalEngine``
through an :class:`EngineHost`; each front-end process runs a ``PredictionService`` over a
:class:`RemoteEngine`. The processes themselves are started by ``voxguard.processes``.

Tests pass ``detectors`` of their own; otherwise the models named in the settings are loaded.
Here :class:`Settings` is split into the sections each part is handed (``settings.py``): the engine
gets ``loading`` and ``batching``, the service ``service``; the HTTP app takes ``http`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..scorer import ScoringModel
from ..settings import Settings
from .engine import LocalEngine
from .enginehost import EngineHost
from .remote import RemoteEngine
from .service import PredictionService
from .shm import SharedFolder
from .telemetry import Metrics

Detectors = Mapping[str, ScoringModel]


def local_engine(settings: Settings, metrics: Metrics, detectors: Detectors | None = None) -> LocalEngine:
    """The detectors and the batcher in this process (loading blocks: call at start-up, or in a thread)."""
    if detectors is None:
        return LocalEngine.load(settings.loading, settings.batching, metrics)
    return LocalEngine(settings.batching, detectors, metrics)


def in_process(settings: Settings, metrics: Metrics, detectors: Detectors | None = None) -> PredictionService:
    """The in-process wiring: the service over an engine in this process."""
    return PredictionService(settings.service, local_engine(settings, metrics, detectors), metrics)


def engine_host(
    settings: Settings, shared: SharedFolder, metrics: Metrics, detectors: Detectors | None = None
) -> EngineHost:
    """The engine process's part of the split wiring: its engine, served to the front-ends."""
    engine = local_engine(settings, metrics, detectors)
    metrics.max_batch_size = engine.max_batch_size
    return EngineHost(engine, shared.open_board(), shared.socket, metrics)


def frontend(settings: Settings, shared: SharedFolder, index: int, metrics: Metrics) -> PredictionService:
    """Front-end ``index``'s part of the split wiring: the service over the engine in the engine process
    (which must have written its catalogue: it is warm)."""
    engine = RemoteEngine(settings.batching, shared.path, index, shared.open_board(), metrics)
    return PredictionService(settings.service, engine, metrics)
