"""The prediction pipeline as the server runs it: decode in a pool, batch, score, summarise.

No HTTP here: the API layer turns bytes into calls and the results and exceptions into responses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .audio import prepare
from .batching import Batcher
from .inference import Detector, bucket_sizes
from .metrics import Metrics
from .runtime import set_threads
from .scoring import Verdict, summarize
from .settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float


@dataclass(frozen=True)
class Prediction:
    model: str
    verdict: Verdict
    timing: Timing
    batch_sizes: list[int]


class PredictionService:
    """Owns the loaded detectors, the decode pool and the batcher for one server process."""

    def __init__(self, settings: Settings, detectors: dict[str, Detector], metrics: Metrics) -> None:
        self.settings = settings
        self.detectors = detectors
        self.metrics = metrics
        self.default_model = next(iter(detectors))
        device_type = next(iter(detectors.values())).device.type
        self.max_batch_size = settings.batch_size_for(device_type)
        metrics.max_batch_size = self.max_batch_size
        self.options = settings.audio_options()
        workers = settings.decode_workers or os.cpu_count() or 1
        self._decode_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxguard-decode")
        self.batcher = Batcher(
            dict(detectors),
            max_batch_size=self.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            observer=metrics,
        )
        self.warmed_up = False

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics) -> PredictionService:
        """Load every configured model (blocking; call from a thread at start-up)."""
        set_threads(settings.threads)
        single = len(settings.models) == 1
        detectors = {}
        for name in settings.models:
            detector = Detector.load(
                name,
                checkpoint=settings.checkpoint if single else None,
                checkpoint_dir=settings.checkpoint_dir,
                engine=settings.engine,
                device=settings.device,
                compile_model=settings.compile,
                allocator_tuning=settings.allocator_tuning,
            )
            detectors[detector.name] = detector
        return cls(settings, detectors, metrics)

    def warmup(self) -> None:
        for detector in self.detectors.values():
            detector.warmup(bucket_sizes(self.max_batch_size) if detector.device.type == "cuda" else (1,))
        self.warmed_up = True

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.warmup)
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.drain()
        self._decode_pool.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        return self.warmed_up and self.batcher.alive and self.batcher.accepting

    def resolve_model(self, model: str | None) -> str:
        return model or self.default_model

    async def predict(self, data: bytes, model: str | None, received_at: float) -> Prediction:
        """Score one upload; ``received_at`` (``time.monotonic()``) starts the request deadline."""
        name = self.resolve_model(model)
        deadline = received_at + self.settings.request_timeout_s
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        audio, windows = await loop.run_in_executor(self._decode_pool, prepare, data, self.options)
        decoded = time.monotonic()
        scored = await self.batcher.submit(name, windows.batch, deadline)
        verdict = summarize(audio, windows, scored.scores, threshold=self.settings.threshold)
        done = time.monotonic()
        timing = Timing(
            decode_ms=(decoded - started) * 1000.0,
            queue_ms=scored.queue_ms,
            inference_ms=scored.inference_ms,
            total_ms=(done - received_at) * 1000.0,
        )
        return Prediction(name, verdict, timing, scored.batch_sizes)
