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
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from ..inference import ModelInfo, bucket_sizes
from ..process_tuning import set_threads
from ..scorer import ScoringModel
from ..settings import BatchingSettings, ModelLoading
from .admission import Admission
from .batching import Batcher, BatchObserver, BatchShapes, ScoredWindows
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

    @property
    def admission(self) -> Admission:
        """The rule for who may queue work, and the gate a drain closes: ``admission.stop()`` refuses new
        work, ``admission.latest_deadline`` says how long admitted work may still take."""
        ...

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

    def depth(self, model: str) -> int:
        """Windows of ``model`` waiting to be scored."""
        ...

    @property
    def window_s(self) -> float:
        """The measured device time per window."""
        ...

    def not_ready_reason(self) -> str | None:
        """Why the engine cannot score now (warming up, restarting, its process gone), in words; None
        when it can. Whether it admits work is its ``admission``'s to say."""
        ...

    @property
    def idle(self) -> bool:
        """Nothing queued or being scored."""
        ...

    async def drain(self) -> None:
        """Stop admitting, finish what was admitted, stop."""


class LocalEngine:
    """The detectors and the batcher in this process: one worker coroutine owns the device."""

    def __init__(
        self, batching: BatchingSettings, detectors: Mapping[str, ScoringModel], observer: BatchObserver
    ) -> None:
        if not detectors:
            raise ValueError("the engine needs at least one model")
        self.detectors = dict(detectors)
        first = next(iter(detectors.values()))
        self._max_batch_size = batching.batch_size_for(first.device.type)
        self.batcher = Batcher(
            detectors,
            max_batch_size=self._max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            queue_size=batching.queue_size,
            observer=observer,
            shapes=BatchShapes(bucket_sizes(self._max_batch_size)) if first.pads_to_buckets else None,
        )
        self.admission = self.batcher.admission
        self.warmed_up = False

    @classmethod
    def load(cls, loading: ModelLoading, batching: BatchingSettings, observer: BatchObserver) -> LocalEngine:
        """Load every configured model (blocking; call from a thread at start-up)."""
        set_threads(loading.threads)
        if loading.simulated_ms is not None:
            simulated = {name: SimulatedDetector(name, *loading.simulated_ms) for name in loading.models}
            return cls(batching, simulated, observer)
        detectors: dict[str, ScoringModel] = {}
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
        """Warm every model up, then time one forward of each batch shape (the slowest model's): the
        batcher calibrates its first estimates of the device time per window and per shape on them."""
        timed: dict[int, float] = {}
        for detector in self.detectors.values():
            accelerator = detector.device.type != "cpu"
            sizes = bucket_sizes(self._max_batch_size) if accelerator else (1,)
            detector.warmup(sizes)
            for size in sizes if self.batcher.shapes is not None else sizes[-1:]:
                timed[size] = max(timed.get(size, 0.0), _timed_forward(detector, size))
        self.batcher.calibrate(timed)
        logger.info(
            "device time per window: %.1f ms (measured after warm-up)", self.batcher.window_s * 1000.0
        )
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

    def depth(self, model: str) -> int:
        return self.batcher.depth(model)

    @property
    def window_s(self) -> float:
        return self.batcher.window_s

    def not_ready_reason(self) -> str | None:
        if not self.warmed_up:
            return "models are warming up"
        if not self.batcher.alive:
            return "the batch worker is restarting"
        return None

    @property
    def idle(self) -> bool:
        return self.batcher.idle

    async def drain(self) -> None:
        await self.batcher.drain()


def _timed_forward(detector: ScoringModel, size: int) -> float:
    """Seconds one forward of ``size`` silent windows takes on a warm detector."""
    windows = np.zeros((size, detector.window), dtype=np.float32)
    start = time.perf_counter()
    detector.scores(windows)
    return time.perf_counter() - start
