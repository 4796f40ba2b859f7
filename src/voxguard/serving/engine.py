"""The engine: what scores windows for the service. One interface, :class:`Engine`, and its in-process
implementation, :class:`LocalEngine` (the loaded detectors and the batcher, in this process).

The service (``service.py``) only ever talks to an ``Engine``: it submits a request's windows with a
deadline and awaits their scores (cancelling the await cancels the work), asks whether it is ready, and
drains it on shutdown. Where the engine lives is the engine's business; this one is in the same process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..inference import Detector, ModelInfo, bucket_sizes
from ..process_tuning import set_threads
from ..settings import BatchingSettings, ModelLoading
from .batching import Batcher, BatchObserver, BatchShapes, ScoredWindows, Scorer
from .simulated import SimulatedDetector

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """Scores windows for the service. ``submit`` is cancelled by cancelling the task awaiting it."""

    @property
    def models(self) -> dict[str, ModelInfo]:
        """The loaded models by name, the default first."""
        ...

    @property
    def max_batch_size(self) -> int: ...

    async def start(self) -> None:
        """Warm up and start scoring (the service is not ready before)."""

    def admit(self, model: str) -> None:
        """Refuse now (``serving.errors.ShuttingDown``, ``QueueFull``, ``UnknownModel``) a request that
        ``submit`` would refuse whatever its length, before it is decoded."""

    async def submit(
        self, model: str, windows: np.ndarray, deadline: float, *, admitted: bool = False
    ) -> ScoredWindows:
        """The scores of ``windows`` by ``model`` before ``deadline`` (``time.monotonic()``), or an error
        from ``serving.errors`` (queue full, overloaded, shutting down, deadline exceeded, inference failed).
        ``admitted``: the request passed :meth:`admit` before a drain began, so it is scored even though
        the engine stopped admitting meanwhile (a drain answers what it admitted)."""
        ...

    def work_s(self, windows: int) -> float:
        """Seconds of device time ``windows`` windows take at the measured rate."""
        ...

    def depth(self, model: str) -> int:
        """Windows of ``model`` waiting to be scored."""
        ...

    @property
    def window_s(self) -> float:
        """The measured device time per window."""
        ...

    @property
    def ready(self) -> bool:
        """Started, scoring, and accepting work."""
        ...

    def not_ready_reason(self) -> str | None:
        """Why the engine is not ready, in words (None when it is)."""
        ...

    @property
    def accepting(self) -> bool: ...

    @property
    def idle(self) -> bool:
        """Nothing queued or being scored."""
        ...

    @property
    def latest_deadline(self) -> float:
        """The latest deadline of any work admitted so far (``time.monotonic()``)."""
        ...

    def stop_admitting(self) -> None:
        """Refuse new work from now on; admitted work still runs."""

    async def drain(self) -> None:
        """Stop admitting, finish what was admitted, stop."""


class LocalEngine:
    """The detectors and the batcher in this process: one worker coroutine owns the device."""

    def __init__(
        self,
        batching: BatchingSettings,
        detectors: dict[str, Detector | SimulatedDetector],
        observer: BatchObserver,
    ) -> None:
        if not detectors:
            raise ValueError("the engine needs at least one model")
        self.detectors = detectors
        first = next(iter(detectors.values()))
        self._max_batch_size = batching.batch_size_for(first.device.type)
        scorers: dict[str, Scorer] = dict(detectors)
        self.batcher = Batcher(
            scorers,
            max_batch_size=self._max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            queue_size=batching.queue_size,
            observer=observer,
            shapes=BatchShapes(bucket_sizes(self._max_batch_size)) if first.pads_to_buckets else None,
        )
        self.warmed_up = False

    @classmethod
    def load(cls, loading: ModelLoading, batching: BatchingSettings, observer: BatchObserver) -> LocalEngine:
        """Load every configured model (blocking; call from a thread at start-up)."""
        set_threads(loading.threads)
        if loading.simulated_ms is not None:
            simulated = {name: SimulatedDetector(name, *loading.simulated_ms) for name in loading.models}
            return cls(batching, simulated, observer)  # type: ignore[arg-type]
        detectors: dict[str, Detector | SimulatedDetector] = {}
        for name in loading.models:
            detector = loading.detector.load(name, loading.checkpoint)
            detectors[detector.name] = detector
        return cls(batching, detectors, observer)

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {name: d.info for name, d in self.detectors.items()}

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    def warmup(self) -> None:
        """Warm every model up, then time one forward of each batch shape: the batcher's first estimates
        of the device time per window and per shape (its measurements of real batches take over)."""
        window_s = 0.0
        shapes = self.batcher.shapes
        timed: dict[int, float] = {}
        for detector in self.detectors.values():
            accelerator = detector.device.type != "cpu"
            sizes = bucket_sizes(self._max_batch_size) if accelerator else (1,)
            detector.warmup(sizes)
            for size in sizes if shapes is not None else sizes[-1:]:
                timed[size] = max(timed.get(size, 0.0), _timed_forward(detector, size))
            window_s = max(window_s, timed[sizes[-1]] / sizes[-1])
        if shapes is not None:
            shapes.forward_s.update(timed)
        self.batcher.window_s = window_s
        logger.info("device time per window: %.1f ms (measured after warm-up)", window_s * 1000.0)
        self.warmed_up = True

    async def start(self) -> None:
        await self.batcher.on_device(self.warmup)
        self.batcher.start()

    def admit(self, model: str) -> None:
        self.batcher.admit(model)

    async def submit(
        self, model: str, windows: np.ndarray, deadline: float, *, admitted: bool = False
    ) -> ScoredWindows:
        return await self.batcher.submit(model, windows, deadline, admitted=admitted)

    def enqueue(
        self, model: str, windows: Sequence[np.ndarray], deadline: float
    ) -> asyncio.Future[ScoredWindows]:
        """``Batcher.enqueue``: what the engine process uses, a future instead of a task per request."""
        return self.batcher.enqueue(model, windows, deadline)

    def work_s(self, windows: int) -> float:
        return self.batcher.work_s(windows)

    def depth(self, model: str) -> int:
        return self.batcher.depth(model)

    @property
    def window_s(self) -> float:
        return self.batcher.window_s

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        if not self.batcher.accepting:
            return "shutting down"
        if not self.warmed_up:
            return "models are warming up"
        if not self.batcher.alive:
            return "the batch worker is restarting"
        return None

    @property
    def accepting(self) -> bool:
        return self.batcher.accepting

    @property
    def idle(self) -> bool:
        return self.batcher.idle

    @property
    def latest_deadline(self) -> float:
        return self.batcher.latest_deadline

    def stop_admitting(self) -> None:
        self.batcher.stop_admitting()

    async def drain(self) -> None:
        await self.batcher.drain()


def _timed_forward(detector: Detector | SimulatedDetector, size: int) -> float:
    """Seconds one forward of ``size`` silent windows takes on a warm detector."""
    windows = np.zeros((size, detector.window), dtype=np.float32)
    start = time.perf_counter()
    detector.scores(windows)
    return time.perf_counter() - start
