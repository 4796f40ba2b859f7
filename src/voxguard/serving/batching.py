"""Dynamic micro-batching: many requests' windows, one device, one forward at a time.

Requests put windows on a bounded ``asyncio.Queue`` per model. A single worker coroutine owns
the device: it waits for a first window, keeps collecting windows of that model until
``max_batch_size`` or until ``max_wait_ms`` after the first window *arrived* (so a window that
already waited behind a running batch is dispatched at once), drops windows whose client is gone
or whose deadline passed, and runs the forward in one dedicated thread so the event loop keeps
accepting and decoding while the model runs. With several models, the worker serves their
queues in turn; a batch never mixes models, and two forwards never overlap.

A device that pads every batch to a few compiled shapes (CUDA graphs: powers of two) computes 64
windows for a batch of 33. :class:`BatchShapes` then trims a batch to the shape below when the
measured forward times say that shape scores more windows per second; the trimmed windows lead the
next batch (Triton's preferred batch sizes, chosen by measurement instead of configuration).

While a forward runs, the worker collects the next batch shortly before the forward should end (by
its measured time) and queues it on the device thread, which starts it the moment the first ends;
a batch of a few stragglers is not worth that and waits for the device to be free instead.

Who may queue is :class:`~voxguard.serving.admission.Admission`'s rule, asked with the live numbers.
Nothing here knows about HTTP: it raises the errors of ``serving.errors``, which carry their status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from ..scorer import Scorer
from .admission import Admission, Load, Refusals
from .errors import DeadlineExceeded, InferenceFailed

logger = logging.getLogger(__name__)

T = TypeVar("T")
# What a forward hands back from the device thread: the scores, and when it started and ended.
_Forwarded = tuple[np.ndarray, float, float]


class BatchObserver(Refusals, Protocol):
    """Hooks for metrics; the batcher calls them from the event loop thread."""

    def batch(self, model: str, size: int, queue_wait_s: list[float], inference_s: float) -> None: ...

    def dropped(self, model: str, reason: str, count: int) -> None: ...

    def queue_depth(self, model: str, depth: int) -> None: ...


class _NullObserver:
    def batch(self, model: str, size: int, queue_wait_s: list[float], inference_s: float) -> None:
        pass

    def dropped(self, model: str, reason: str, count: int) -> None:
        pass

    def queue_depth(self, model: str, depth: int) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass


@dataclass(frozen=True)
class ScoredWindows:
    """One request's windows, scored; ``batch_sizes`` lists each distinct batch its windows ran in."""

    scores: np.ndarray
    batch_sizes: list[int]
    queue_ms: float
    inference_ms: float


@dataclass
class _Request:
    """One submission. Its windows' scores fill in as their batches finish, and ``future`` resolves
    once the last one has: one future per request, not per window, so a request costs the event loop
    the same whatever its length. A cancelled or failed ``future`` makes the worker drop the rest."""

    future: asyncio.Future[ScoredWindows]
    deadline: float
    scores: np.ndarray
    remaining: int
    batches: dict[int, int] = field(default_factory=dict)  # batch id -> size, in the order they ran
    queue_s: float = 0.0
    inference_s: float = 0.0

    def scored(
        self, index: int, score: float, batch_id: int, size: int, wait_s: float, forward_s: float
    ) -> None:
        self.scores[index] = score
        self.queue_s = max(self.queue_s, wait_s)
        if batch_id not in self.batches:
            self.batches[batch_id] = size
            self.inference_s += forward_s
        self.remaining -= 1
        if self.remaining == 0:
            result = ScoredWindows(
                self.scores, list(self.batches.values()), self.queue_s * 1000.0, self.inference_s * 1000.0
            )
            _resolve(self.future, result)


class BatchShapes:
    """The batch sizes a padding device computes, and how long a forward of each took (measured)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        if not sizes or min(sizes) < 1:
            raise ValueError(f"batch shapes must be positive sizes, got {list(sizes)}")
        self.sizes = tuple(sorted(set(sizes)))
        self.forward_s: dict[int, float] = {}

    def padded(self, n: int) -> int:
        """The shape a batch of ``n`` windows is padded to (``n`` itself past the largest)."""
        return next((size for size in self.sizes if size >= n), n)

    def expected_s(self, n: int) -> float | None:
        """The measured time of a forward of ``n`` windows (None before its shape ran)."""
        return self.forward_s.get(self.padded(n))

    def efficiency(self, n: int) -> float | None:
        """Windows a second a forward of ``n`` windows scores, as a share of the best measured shape's
        (None before its shape ran)."""
        seconds = self.expected_s(n)
        if seconds is None:
            return None
        return (n / seconds) / max(size / s for size, s in self.forward_s.items())

    def observe(self, n: int, seconds: float) -> None:
        """A forward of ``n`` windows took ``seconds``; a moving average per shape."""
        shape = self.padded(n)
        previous = self.forward_s.get(shape)
        self.forward_s[shape] = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def take(self, n: int) -> int:
        """How many of ``n`` waiting windows to forward now: all of them, or the shape below when
        that shape's measured rate (windows a second) beats padding all ``n`` to the shape above. A
        shape not measured yet is assumed to cost in proportion to its size, so it gets tried."""
        shape = self.padded(n)
        below = max((size for size in self.sizes if size < n), default=None)
        if shape == n or below is None or shape not in self.forward_s:
            return n
        shape_s = self.forward_s[shape]
        below_s = self.forward_s.get(below, shape_s * below / shape)
        return below if below / below_s > n / shape_s else n


@dataclass
class _Item:
    window: np.ndarray
    request: _Request
    index: int
    enqueued: float


# How long before a running forward should end the next batch is collected and queued behind it:
# enough for this loop to wake up, collect and hand over (about 1 ms measured), so the device does not
# wait; every window that arrives before then still makes the batch.
_LEAD_S = 0.002
# The least efficiency (see ``BatchShapes.efficiency``) of a batch queued behind a running forward.
_QUEUE_AHEAD_EFFICIENCY = 0.75


@dataclass
class _Flight:
    """A batch handed to the device thread: its live windows, how many windows it took off the queue
    (``_finish`` counts those), and when its forward is expected to end (from measured forward times;
    None before anything was measured)."""

    model: str
    live: list[_Item]
    taken: int
    future: asyncio.Future[_Forwarded]
    ends: float | None

    async def nearly_done(self) -> None:
        """Until shortly before the forward should end, or it has ended: when to collect the next.
        A forward with no expected end, or past it, is waited for: the device is busy anyway, and
        the windows that arrive meanwhile make the next batch fuller."""
        if self.future.done():
            return
        now = time.monotonic()
        if self.ends is None or now >= self.ends:
            await asyncio.wait({self.future})
        elif now < self.ends - _LEAD_S:
            await asyncio.wait({self.future}, timeout=self.ends - _LEAD_S - now)


@dataclass
class _ModelQueue:
    scorer: Scorer
    queue: asyncio.Queue[_Item]
    carried: collections.deque[_Item] = field(default_factory=collections.deque)  # trimmed, go first

    @property
    def waiting(self) -> int:
        return self.queue.qsize() + len(self.carried)


class Batcher:
    """Owns the queues and the single device worker; see the module docstring for the policy."""

    def __init__(
        self,
        scorers: Mapping[str, Scorer],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        queue_size: int = 1024,
        observer: BatchObserver | None = None,
        restart_delay_s: float = 0.2,
        window_s: float = 0.0,
        shapes: BatchShapes | None = None,
    ) -> None:
        if not scorers:
            raise ValueError("the batcher needs at least one model")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._models = {
            name: _ModelQueue(s, asyncio.Queue(maxsize=queue_size)) for name, s in scorers.items()
        }
        self._order = list(self._models)
        self._next = 0
        self._observer: BatchObserver = observer or _NullObserver()
        self.admission = Admission(self._order, queue_size, max_batch_size, self._observer)
        self._restart_delay_s = restart_delay_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxguard-device")
        self._work = asyncio.Event()
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.last_batch_s = 0.0
        self._batches = 0
        self.window_s = window_s
        self.shapes = shapes

    @property
    def models(self) -> list[str]:
        return list(self._order)

    @property
    def alive(self) -> bool:
        """True while the worker task runs; ``/ready`` reports not-ready otherwise."""
        return self._worker is not None and not self._worker.done()

    @property
    def idle(self) -> bool:
        """No window is queued or being scored."""
        return self._idle.is_set()

    def depth(self, model: str) -> int:
        return self._models[model].waiting

    def work_s(self, windows: int) -> float:
        """Seconds the device needs for ``windows`` windows at the measured rate (see ``window_s``)."""
        return windows * self.window_s

    def calibrate(self, forward_s: dict[int, float]) -> None:
        """Start from forwards timed before serving: ``forward_s`` holds the seconds one forward of each
        batch size took (every shape on a padding device, else one batch). The largest batch's time
        per window is the first estimate of ``window_s``; the batches served take over from there."""
        largest = max(forward_s)
        self.window_s = forward_s[largest] / largest
        if self.shapes is not None:
            self.shapes.forward_s.update(forward_s)

    async def on_device(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the device thread, where every forward runs (warm-up and graph capture too)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="voxguard-batch-worker")
        self._worker.add_done_callback(self._on_worker_exit)

    def _on_worker_exit(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        logger.error(
            "batch worker died; restarting in %.1f s", self._restart_delay_s, exc_info=task.exception()
        )
        self.restarts += 1
        asyncio.get_running_loop().call_later(self._restart_delay_s, self._restart)

    def _restart(self) -> None:
        if not self._stopping and not self.alive:
            self.start()
            self._work.set()

    def admit(self, model: str, windows: int = 1, *, admitted: bool = False) -> asyncio.Queue[_Item]:
        """The model's queue if it can take ``windows`` windows now, else the refusal (counted by the
        observer): see :meth:`Admission.check`, which this asks with the live numbers."""
        entry = self._models.get(model)
        queued = entry.queue.qsize() if entry is not None else 0
        self.admission.check(model, windows, Load(queued, self.last_batch_s), admitted=admitted)
        assert entry is not None  # an unknown model was refused
        return entry.queue

    async def submit(
        self, model: str, windows: Sequence[np.ndarray], deadline: float, *, admitted: bool = False
    ) -> ScoredWindows:
        """Queue a request's windows and wait for all their scores (``deadline`` is ``time.monotonic()``)."""
        return await until_deadline(self.enqueue(model, windows, deadline, admitted=admitted), deadline)

    def enqueue(
        self, model: str, windows: Sequence[np.ndarray], deadline: float, *, admitted: bool = False
    ) -> asyncio.Future[ScoredWindows]:
        """Queue a request's windows now; the future resolves with their scores, and cancelling it drops
        what is not computed yet. Windows still queued at ``deadline`` fail with DeadlineExceeded when
        the worker reaches them; waiting no longer than the deadline is the caller's part (``submit``)."""
        n = len(windows)
        if n == 0:
            raise ValueError("submit needs at least one window")
        queue = self.admit(model, n, admitted=admitted)
        now = time.monotonic()
        self.admission.in_time(n, self._outstanding, self.window_s, deadline, now)
        self.admission.queued(deadline)
        request = _Request(asyncio.get_running_loop().create_future(), deadline, np.empty(n, np.float32), n)
        for i, window in enumerate(windows):
            queue.put_nowait(_Item(window, request, i, now))
        self._outstanding += n
        self._idle.clear()
        self._observer.queue_depth(model, self._models[model].waiting)
        self._work.set()
        return request.future

    async def drain(self) -> None:
        """Stop admitting, finish every queued and running window, then stop the worker."""
        self.admission.stop()
        await self._idle.wait()
        await self.stop()

    async def stop(self, *, wait: bool = True) -> None:
        """Stop the worker now: windows it holds fail (:class:`InferenceFailed`), queued ones are left.
        ``wait=False`` does not wait for a forward still running on the device thread."""
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=wait)

    def _pick_model(self) -> str | None:
        for offset in range(len(self._order)):
            name = self._order[(self._next + offset) % len(self._order)]
            if self._models[name].waiting:
                self._next = (self._next + offset + 1) % len(self._order)
                return name
        return None

    async def _run(self) -> None:
        """Collect, forward, answer. While one forward runs, the next batch is collected shortly before
        it should end and queued on the device thread behind it: the device goes from one forward
        straight to the next instead of idling while this loop wakes up, answers and collects."""
        flights: list[_Flight] = []  # the running forward, and the batch queued behind it
        try:
            while True:
                if flights and any(entry.waiting for entry in self._models.values()):
                    await flights[0].nearly_done()
                    if not self._worth_queueing():
                        await asyncio.wait({flights[0].future})
                model = self._pick_model()  # after waiting: the model whose turn it is by then
                if model is None:
                    if flights and flights[0].future.done():
                        await self._land(flights[0])
                        flights.pop(0)
                    else:
                        self._work.clear()
                        await self._work_or(flights[0].future if flights else None)
                    continue
                following = self._launch(model, await self._collect(model), flights[-1] if flights else None)
                if following is not None:
                    flights.append(following)
                if len(flights) == 2:
                    await self._land(flights[0])
                    flights.pop(0)
        except BaseException:
            # The worker is dying (a bug, or cancellation): answer the windows it holds now instead
            # of leaving their clients to time out, then let the supervisor restart it.
            if not flights:
                raise
            error_id = uuid.uuid4().hex[:12]
            held = sum(len(f.live) for f in flights)
            logger.exception("batch worker failed holding %d windows (error id %s)", held, error_id)
            for flight in flights:
                for item in flight.live:
                    _resolve(item.request.future, exc=InferenceFailed(error_id))
                self._finish(flight.taken)
            raise

    def _worth_queueing(self) -> bool:
        """Whether the windows waiting now make a batch worth queueing behind the running forward: one
        that scores windows at least ``_QUEUE_AHEAD_EFFICIENCY`` as fast as the best shape does. A few
        stragglers are better left for the batch collected once the device is free, which the windows
        arriving meanwhile fill (else a slow host settles into alternating one large batch and one of
        a single window)."""
        if self.shapes is None:
            return True
        waiting = min(max(entry.waiting for entry in self._models.values()), self.max_batch_size)
        efficiency = self.shapes.efficiency(self.shapes.take(waiting))
        return efficiency is None or efficiency >= _QUEUE_AHEAD_EFFICIENCY

    async def _work_or(self, forward: asyncio.Future[_Forwarded] | None) -> None:
        """Until a window is queued, or ``forward`` has ended."""
        if forward is None:
            await self._work.wait()
            return
        work = asyncio.ensure_future(self._work.wait())
        try:
            await asyncio.wait({work, forward}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()

    def _launch(self, model: str, items: list[_Item], after: _Flight | None) -> _Flight | None:
        """Queue the live ``items`` on the device thread (behind ``after``, if it is still running);
        ``None`` when none was left to compute."""
        try:
            live = self._drop_stale(model, items)
        except BaseException:
            self._finish(len(items))
            raise
        if not live:
            self._finish(len(items))
            return None
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, _forward, self._models[model].scorer, [i.window for i in live]
        )
        expected_s = self.shapes.expected_s(len(live)) if self.shapes is not None else None
        if expected_s is None and self.window_s:
            expected_s = self.work_s(len(live))
        ends = None
        if expected_s is not None and (after is None or after.ends is not None):
            ends = max(time.monotonic(), after.ends if after is not None else 0.0) + expected_s
        return _Flight(model, live, len(items), future, ends)

    async def _land(self, flight: _Flight) -> None:
        """Wait for ``flight``'s forward and answer its windows (failed batches: one window at a time)."""
        await self._score(flight.model, flight.live, flight.future)
        self._finish(flight.taken)

    async def _collect(self, model: str) -> list[_Item]:
        entry = self._models[model]
        queue, carried = entry.queue, entry.carried
        items = [carried.popleft() for _ in range(min(len(carried), self.max_batch_size))]
        if not items:
            items.append(queue.get_nowait())
        close_at = items[0].enqueued + self.max_wait_s
        while len(items) < self.max_batch_size:
            try:
                items.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = close_at - time.monotonic()
            if remaining <= 0:
                break
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter}, timeout=remaining)
            if getter in done or not getter.cancel():
                items.append(getter.result())
            else:
                with contextlib.suppress(asyncio.CancelledError):  # Queue.get leaves the item queued
                    await getter
                break
        if self.shapes is not None:
            take = self.shapes.take(len(items))
            carried.extendleft(reversed(items[take:]))
            del items[take:]
        self._observer.queue_depth(model, entry.waiting)
        return items

    def _drop_stale(self, model: str, items: list[_Item]) -> list[_Item]:
        """Cancelled (client gone) and expired windows are never computed."""
        now = time.monotonic()
        live, cancelled, expired = [], 0, 0
        for item in items:
            if item.request.deadline <= now:  # checked first: a request that timed out also cancelled
                expired += 1
                _resolve(item.request.future, exc=DeadlineExceeded("deadline passed while queued"))
            elif item.request.future.done():  # the client went away, or another window of it failed
                cancelled += 1
            else:
                live.append(item)
        if cancelled:
            self._observer.dropped(model, "cancelled", cancelled)
        if expired:
            self._observer.dropped(model, "expired", expired)
        return live

    async def _score(
        self, model: str, items: list[_Item], future: asyncio.Future[_Forwarded] | None = None
    ) -> None:
        scorer = self._models[model].scorer
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, _forward, scorer, [i.window for i in items]
            )
        try:
            scores, started, ended = await future
        except Exception:
            if len(items) > 1:
                logger.warning(
                    "batch of %d for %s failed; retrying its windows one by one", len(items), model
                )
                for item in items:
                    await self._score(model, [item])
                return
            error_id = uuid.uuid4().hex[:12]
            logger.exception("inference failed for %s (error id %s)", model, error_id)
            _resolve(items[0].request.future, exc=InferenceFailed(error_id))
            return
        elapsed = ended - started
        self.last_batch_s = elapsed
        self._batches += 1
        per_window = elapsed / len(items)
        self.window_s = per_window if not self.window_s else 0.8 * self.window_s + 0.2 * per_window
        if self.shapes is not None:
            self.shapes.observe(len(items), elapsed)
        waits = [started - item.enqueued for item in items]
        self._observer.batch(model, len(items), waits, elapsed)
        for item, score, wait in zip(items, scores, waits, strict=True):
            if not item.request.future.done():
                item.request.scored(item.index, float(score), self._batches, len(items), wait, elapsed)

    def _finish(self, count: int) -> None:
        self._outstanding -= count
        if self._outstanding == 0:
            self._idle.set()


async def until_deadline(future: asyncio.Future[ScoredWindows], deadline: float) -> ScoredWindows:
    """The scores ``future`` resolves with, or :class:`DeadlineExceeded` at ``deadline``; a future not
    resolved by then is cancelled, which drops its windows not yet computed."""
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await future
    except TimeoutError:
        raise DeadlineExceeded("the request's deadline passed before its audio was scored") from None
    finally:
        future.cancel()  # no-op once resolved


def _forward(scorer: Scorer, windows: list[np.ndarray]) -> _Forwarded:
    """Stack and score, both in the device thread (a batch of 64 windows is 16 MB to copy, which must
    not hold up the event loop); the scores, and when the forward started and ended."""
    started = time.monotonic()
    scores = scorer.scores(np.stack(windows))
    return scores, started, time.monotonic()


def _resolve(
    future: asyncio.Future, result: ScoredWindows | None = None, exc: Exception | None = None
) -> None:
    """Set a future only if its client is still waiting (a cancelled future must not be set)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
