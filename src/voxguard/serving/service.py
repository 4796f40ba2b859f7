"""The prediction pipeline as the server runs it: decode in a pool, batch, score, summarise.

No HTTP here: the API layer turns bytes into calls and the results and exceptions into responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..audio.decoding import DecodedAudio
from ..audio.options import SAMPLE_RATE
from ..audio.streaming import StreamResampler, StreamWindower
from ..audio.windows import WindowSet
from ..model.localizer import Localizer
from ..pipeline import Pipeline
from ..scoring import FAKE, REAL, Decision, Verdict, decide
from ..settings import ServiceSettings
from .batching import ScoredWindows
from .engine import Engine
from .errors import InferenceFailed, UnknownModel
from .telemetry import Metrics

logger = logging.getLogger(__name__)

# A request's deadline is the configured timeout plus this many times the measured device time of its
# windows, so a long file that an idle server can score is never cut off, whatever the device.
ALLOWANCE = 2.0
# A plain WAV this small decodes and levels in about 0.2 ms (audio.decoding._decode_plain_wav), less than the
# hand-off to the decoding pool and back costs, so it is prepared on the event loop.
INLINE_BYTES = 256 * 1024


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
    """One server process's pipeline: decoding (a thread pool), the verdict rule, and an :class:`Engine`
    that scores the windows. Routes, the live stream and the server talk to this class; the drain closes
    its engine's ``admission`` (the gate, which also knows the latest deadline it let in)."""

    def __init__(self, settings: ServiceSettings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.admission = engine.admission
        self.metrics = metrics
        self.models = engine.models
        self.default_model = next(iter(self.models))
        metrics.max_batch_size = engine.max_batch_size
        # One verdict rule per model (each has its own score offset); windows are cut and segments placed
        # the same for all.
        localizer = Localizer.load()
        self.pipelines = {
            name: Pipeline(settings.audio, settings.rule.for_loaded(info), localizer)
            for name, info in self.models.items()
        }
        self.pipeline = self.pipelines[self.default_model]
        workers = settings.decode_workers or os.cpu_count() or 1
        self._decode_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxguard-decode")
        self._admitted = 0  # requests past admission and not yet answered, decoding ones included

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        while self._admitted:  # admitted requests still decoding submit after the drain began
            await asyncio.sleep(0.01)
        await self.engine.drain()
        self._decode_pool.shutdown(wait=True)

    def not_ready_reason(self) -> str | None:
        """Why ``/ready`` says no (draining, or the engine cannot score), or None when it says yes."""
        if not self.admission.accepting:
            return "shutting down"
        return self.engine.not_ready_reason()

    @property
    def idle(self) -> bool:
        """No admitted request is waiting for an answer: the drain may end."""
        return not self._admitted and self.engine.idle

    @contextlib.contextmanager
    def _admission(self, name: str) -> Iterator[None]:
        """Admit a request before it is decoded (a full or draining server refuses it before any work)
        and count it until it is answered, so a drain that begins meanwhile waits for it."""
        self.engine.admit(name)
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    def publish_metrics(self) -> None:
        """Refresh the gauges that are read, not counted: queue depths and the device time per window."""
        for name in self.models:
            self.metrics.queue_depth(name, self.engine.depth(name))
        self.metrics.window_seconds.set(self.engine.window_s)

    def resolve_model(self, model: str | None) -> str:
        """The model a request asked for (the default when none), refused when it is not loaded."""
        name = model or self.default_model
        if name not in self.models:
            raise UnknownModel(name, list(self.models))
        return name

    def deadline(self, start: float, windows: int) -> float:
        """When a request started at ``start`` with ``windows`` windows must be answered."""
        return start + self.settings.request_timeout_s + ALLOWANCE * windows * self.engine.window_s

    async def _prepare(self, data: bytes) -> tuple[DecodedAudio, WindowSet]:
        """Decode and window one upload: a small plain WAV on the event loop, anything else in the pool."""
        if len(data) <= INLINE_BYTES and data[:4] == b"RIFF":
            return self.pipeline.windows(data)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode_pool, self.pipeline.windows, data)

    def _prediction(
        self, name: str, verdict: Verdict, scored: ScoredWindows, decode_s: float, received_at: float
    ) -> Prediction:
        timing = Timing(
            decode_ms=decode_s * 1000.0,
            queue_ms=scored.queue_ms,
            inference_ms=scored.inference_ms,
            total_ms=(time.monotonic() - received_at) * 1000.0,
        )
        return Prediction(name, verdict, timing, scored.batch_sizes)

    async def _refined(
        self,
        name: str,
        files: list[tuple[tuple[DecodedAudio, WindowSet], ScoredWindows]],
    ) -> list[tuple[Verdict, ScoredWindows]]:
        """Each file's verdict with its segment edges placed by the localizer (:mod:`voxguard.edges`), in
        the decoding pool: CPU work, only for files with segments, and no second round on the engine."""
        pipeline = self.pipelines[name]
        loop = asyncio.get_running_loop()
        verdicts = [pipeline.verdict(*prepared, scored.scores) for prepared, scored in files]
        placing = {
            i: loop.run_in_executor(self._decode_pool, pipeline.refined, files[i][0][0], v)
            for i, v in enumerate(verdicts)
            if v.decision.segments
        }
        for i, placed in zip(placing, await asyncio.gather(*placing.values()), strict=True):
            verdicts[i] = placed
        return [(verdict, scored) for verdict, (_, scored) in zip(verdicts, files, strict=True)]

    async def predict(self, data: bytes, model: str | None, received_at: float) -> Prediction:
        """Score one upload; ``received_at`` (``time.monotonic()``) starts the request deadline."""
        name = self.resolve_model(model)
        with self._admission(name):
            started = time.monotonic()
            prepared = await self._prepare(data)
            decode_s = time.monotonic() - started
            deadline = self.deadline(received_at, len(prepared[1].spans))
            scored = await self.engine.submit(name, prepared[1].batch, deadline, admitted=True)
            [(verdict, spent)] = await self._refined(name, [(prepared, scored)])
        return self._prediction(name, verdict, spent, decode_s, received_at)

    async def predict_batch(
        self, uploads: list[bytes], model: str | None, received_at: float
    ) -> list[Prediction | Exception]:
        """Score several uploads as one piece of work: one result or error per upload, in order.

        Scored one by one, each file's deadline ran from the request's arrival for its own windows only,
        and the batch's earlier files counted as someone else's queue ahead of it, so an idle server
        refused its own batch. Here every file is decoded first, then all the windows go to the engine as
        one submission with one deadline scaled to all of them: an idle server scores any batch within
        the limits, and a busy one refuses the whole batch up front (the request's error, as for one
        file) only when it cannot finish it. A file that cannot be decoded gets its own error.
        """
        name = self.resolve_model(model)
        with self._admission(name):
            started = time.monotonic()
            decoded = await asyncio.gather(*(self._prepare(data) for data in uploads), return_exceptions=True)
            decode_s = time.monotonic() - started
            for outcome in decoded:
                if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                    raise outcome
            files = {i: f for i, f in enumerate(decoded) if not isinstance(f, BaseException)}
            deadline = self.deadline(received_at, sum(len(w.spans) for _, w in files.values()))
            together = await self._score_together(name, [w.batch for _, w in files.values()], deadline)
            scored = dict(zip(files, together, strict=True))
            good = [i for i in files if isinstance(scored[i], ScoredWindows)]
            refined = await self._refined(name, [(files[i], scored[i]) for i in good])  # type: ignore[misc]
            verdicts = dict(zip(good, refined, strict=True))
        results: list[Prediction | Exception] = []
        for i, outcome in enumerate(decoded):
            if i not in files:  # this file alone could not be decoded
                results.append(outcome)  # type: ignore[arg-type]
            elif isinstance(scores := scored[i], BaseException):
                if not isinstance(scores, Exception):
                    raise scores
                results.append(scores)
            else:
                results.append(self._prediction(name, *verdicts[i], decode_s, received_at))
        return results

    async def _score_together(
        self, name: str, batches: list[np.ndarray], deadline: float
    ) -> list[ScoredWindows | BaseException]:
        """Each file's scores, from one engine submission of all their windows (timing and batch sizes
        are the submission's); its refusal or lateness is the whole request's. A forward that failed, or
        more windows than the queue holds at once, falls back to one submission per file under the same
        deadline, so only a bad file fails."""
        if not batches:
            return []
        if sum(len(b) for b in batches) <= self.settings.queue_size:
            try:
                together = await self.engine.submit(name, np.concatenate(batches), deadline, admitted=True)
            except InferenceFailed:
                pass  # a window of some file failed even alone: find which, file by file below
            else:
                ends = np.cumsum([len(b) for b in batches])
                return [
                    ScoredWindows(
                        together.scores[end - len(b) : end],
                        together.batch_sizes,
                        together.queue_ms,
                        together.inference_ms,
                    )
                    for b, end in zip(batches, ends, strict=True)
                ]
        submissions = (self.engine.submit(name, b, deadline, admitted=True) for b in batches)
        return list(await asyncio.gather(*submissions, return_exceptions=True))


@dataclass(frozen=True)
class LiveWindow:
    """One scored live window: ``margin`` is the model's output; ``score``, ``fake_probability`` and
    ``prediction`` are what the model's rule makes of it, as for an upload's window (its
    ``Rule.window_scores``, and ``Rule.is_fake`` as the rule flags a window of a segment)."""

    index: int
    start_s: float
    end_s: float
    margin: float
    score: float
    fake_probability: float
    prediction: str  # REAL | FAKE
    silent: bool
    batch_size: int


class SlowConsumer(Exception):
    """More windows are waiting to be scored or sent than a live connection may hold."""


class LiveSession:
    """One live stream: 16 kHz samples in, scored windows out, in order, through the shared batcher.

    Windows are submitted as soon as they complete, so live windows share batches with uploads;
    at most ``max_pending`` may be in flight or unsent, which bounds a connection's memory and turns
    a client that sends faster than real time (or stops reading) into :class:`SlowConsumer`.
    """

    def __init__(
        self,
        service: PredictionService,
        model: str | None,
        hop: int,
        max_pending: int,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        self.service = service
        self.model = service.resolve_model(model)
        self.pipeline = service.pipelines[self.model]  # the model's, as its uploads are judged
        self.windower = StreamWindower(self.pipeline.options, hop)
        self.resampler = StreamResampler(sample_rate) if sample_rate != SAMPLE_RATE else None
        self.max_pending = max_pending
        self.pending: asyncio.Queue[asyncio.Task[list[LiveWindow]] | None] = asyncio.Queue()
        self._in_flight = 0
        self._count = 0
        self._scored: list[LiveWindow] = []

    def feed(self, samples: np.ndarray) -> None:
        """Add samples at the stream's rate (resampled to 16 kHz here, as uploads are)."""
        self._submit(self.windower.feed(self.resampler.feed(samples) if self.resampler else samples))

    def finish(self) -> None:
        """Submit the tail window; :meth:`next_scored` returns ``None`` once everything is out."""
        if self.resampler:
            self._submit(self.windower.feed(self.resampler.flush()))
        self._submit(self.windower.finish())
        self.pending.put_nowait(None)

    @property
    def windows_submitted(self) -> int:
        return self._count

    @property
    def speech_s(self) -> float:
        return round(self.windower.speech_s, 3)

    def _submit(self, windows: WindowSet | None) -> None:
        if windows is None:
            return
        n = len(windows.spans)
        if self._in_flight + n > self.max_pending:
            raise SlowConsumer(
                f"more than {self.max_pending} windows waiting: send audio in real time and read the replies"
            )
        self._in_flight += n
        self.pending.put_nowait(asyncio.ensure_future(self._score(self._count, windows)))
        self._count += n

    async def _score(self, first: int, windows: WindowSet) -> list[LiveWindow]:
        deadline = self.service.deadline(time.monotonic(), len(windows.spans))
        scored = await self.service.engine.submit(self.model, windows.batch, deadline)
        rule = self.pipeline.rule
        judged = rule.window_scores(windows.spans, scored.scores, windows.silent)
        return [
            LiveWindow(
                first + i,
                w.start_s,
                w.end_s,
                float(margin),
                w.score,
                w.fake_probability,
                FAKE if rule.is_fake(w.fake_probability) else REAL,
                w.silent,
                scored.batch_sizes[0],
            )
            for i, (w, margin) in enumerate(zip(judged, scored.scores, strict=True))
        ]

    async def next_scored(self) -> list[LiveWindow] | None:
        """The next group of scored windows in stream order, ``None`` after the last (errors propagate)."""
        task = await self.pending.get()
        if task is None:
            return None
        result = await task
        self._in_flight -= len(result)
        self._scored.extend(result)
        return result

    def summary(self) -> Decision | None:
        """The verdict over every window so far, by the uploads' rule (``None`` if all were silent)."""
        if all(w.silent for w in self._scored):
            return None
        w = self._scored
        return decide(
            [(x.start_s, x.end_s) for x in w],
            np.array([x.margin for x in w]),
            [x.silent for x in w],
            self.pipeline.rule,
            self.windower.speech_s,
        )

    def cancel(self) -> None:
        """Drop unscored windows (their batcher futures are cancelled, so they are never computed)."""
        while not self.pending.empty():
            task = self.pending.get_nowait()
            if task is not None:
                task.cancel()
