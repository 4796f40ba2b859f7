"""Unit tests for the dynamic micro-batcher, with small fake scorers (the real model is tested elsewhere).

Every window is ``T`` floats whose first value is its id, and the fake scorer returns ``batch[:, 0]``,
so a score names the window it came from and the scorer's call log says which windows ran together.
"""

from __future__ import annotations

import asyncio
import gc
import math
import re
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from voxguard.serving.batching import Batcher, BatchShapes, ScoredWindows
from voxguard.serving.errors import (
    DeadlineExceeded,
    InferenceFailed,
    QueueFull,
    ServingError,
    ShuttingDown,
    TooManyWindows,
    UnknownModel,
)

T = 4
POISON = -1.0


def windows(*ids: float) -> np.ndarray:
    """``(len(ids), T)`` float32 windows; window ``i`` starts with ``ids[i]``."""
    out = np.tile(np.arange(T, dtype=np.float32) / 10.0, (len(ids), 1))
    out[:, 0] = ids
    return out


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def wait_until(condition, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


@dataclass
class Call:
    model: str
    ids: tuple[float, ...]
    start: float
    end: float


class Device:
    """Shared by the fake scorers of one batcher: the call log, and a lock that detects overlapping calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.overlaps = 0


class FakeScorer:
    """``scores(batch) = batch[:, 0]``; optionally slow, gated (blocks until released) or poisoned."""

    def __init__(
        self,
        name: str = "m",
        *,
        device: Device | None = None,
        delay: float = 0.0,
        gated: bool = False,
        poison: float | None = None,
    ) -> None:
        self.name = name
        self.device = device or Device()
        self.delay = delay
        self.poison = poison
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()

    def release(self) -> None:
        self.gate.set()

    @property
    def calls(self) -> list[Call]:
        return [c for c in self.device.calls if c.model == self.name]

    def seen(self) -> set[float]:
        return {i for c in self.calls for i in c.ids}

    def scores(self, batch: np.ndarray) -> np.ndarray:
        if not self.device.lock.acquire(blocking=False):
            self.device.overlaps += 1
            raise RuntimeError("two forwards overlap")
        try:
            start = time.monotonic()
            assert batch.dtype == np.float32 and batch.ndim == 2 and batch.shape[1] == T
            self.entered.set()
            self.gate.wait(3.0)
            if self.delay:
                time.sleep(self.delay)
            ids = tuple(float(x) for x in batch[:, 0])
            self.device.calls.append(Call(self.name, ids, start, time.monotonic()))
            if self.poison is not None and self.poison in ids:
                raise ValueError("poisoned window")
            return batch[:, 0].copy()
        finally:
            self.device.lock.release()


class RecordingObserver:
    def __init__(self) -> None:
        self.batches: list[tuple[str, int, list[float], float]] = []
        self.drops: list[tuple[str, str, int]] = []
        self.depths: list[tuple[str, int]] = []
        self.refusals: list[str] = []

    def batch(self, model: str, size: int, queue_wait_s: list[float], inference_s: float) -> None:
        self.batches.append((model, size, list(queue_wait_s), inference_s))

    def dropped(self, model: str, reason: str, count: int) -> None:
        self.drops.append((model, reason, count))

    def queue_depth(self, model: str, depth: int) -> None:
        self.depths.append((model, depth))

    def rejected(self, reason: str) -> None:
        self.refusals.append(reason)


@pytest.fixture(autouse=True)
async def loop_errors():
    """Anything reported to the loop's exception handler (e.g. a future set twice, an exception never
    retrieved) fails the test."""
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert not errors, f"loop exception handler was called: {errors}"


@pytest.fixture
async def make_batcher():
    """Build and start batchers; drain them at the end (forcibly if a test left one wedged)."""
    made: list[tuple[Batcher, dict[str, FakeScorer]]] = []

    def make(scorers: dict[str, FakeScorer], **kwargs) -> Batcher:
        kwargs.setdefault("max_wait_ms", 2.0)
        batcher = Batcher(scorers, **kwargs)
        batcher.start()
        made.append((batcher, scorers))
        return batcher

    yield make
    for batcher, scorers in made:
        for scorer in scorers.values():
            scorer.release()
        try:
            await asyncio.wait_for(batcher.drain(), 0.5)  # a healthy drain takes milliseconds here
        except TimeoutError:
            await batcher.stop(wait=False)


# --- correctness and batching -------------------------------------------------------------------


async def test_concurrent_requests_get_their_own_scores_in_window_order(make_batcher):
    scorer = FakeScorer(delay=0.005)
    observer = RecordingObserver()
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=5, observer=observer)
    rng = np.random.default_rng(0)
    requests: list[list[int]] = []
    next_id = 1
    for _ in range(25):
        n = int(rng.integers(1, 6))
        requests.append(list(range(next_id, next_id + n)))
        next_id += n

    async def one(ids: list[int], pause: float) -> ScoredWindows:
        await asyncio.sleep(pause)
        return await batcher.submit("m", windows(*ids), soon())

    results = await asyncio.gather(*(one(ids, 0.002 * (i % 4)) for i, ids in enumerate(requests)))

    calls = scorer.calls
    batch_of = {window_id: k for k, call in enumerate(calls) for window_id in call.ids}
    assert sum(len(c.ids) for c in calls) == next_id - 1  # every window computed exactly once
    assert sorted(batch_of) == list(range(1, next_id))
    for ids, result in zip(requests, results, strict=True):
        assert isinstance(result, ScoredWindows)
        assert result.scores.dtype == np.float32
        np.testing.assert_array_equal(result.scores, np.array(ids, dtype=np.float32))
        ran_in = list(dict.fromkeys(batch_of[i] for i in ids))
        assert result.batch_sizes == [len(calls[k].ids) for k in ran_in]
        assert result.queue_ms >= 0.0
        assert result.inference_ms > 0.0
    assert [size for _, size, _, _ in observer.batches] == [len(c.ids) for c in calls]
    assert all(len(waits) == size for _, size, waits, _ in observer.batches)
    assert all(w >= 0.0 for _, _, waits, _ in observer.batches for w in waits)
    assert max(len(c.ids) for c in calls) <= 8
    assert scorer.device.overlaps == 0


async def test_concurrent_single_window_requests_are_batched(make_batcher):
    scorer = FakeScorer(delay=0.02)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=2)

    async def one(i: int) -> ScoredWindows:
        await asyncio.sleep(0.001 * i)
        return await batcher.submit("m", windows(i), soon())

    results = await asyncio.gather(*(one(i) for i in range(32)))

    sizes = [len(c.ids) for c in scorer.calls]
    assert sum(sizes) == 32
    assert max(sizes) <= 8
    assert sum(sizes) / len(sizes) > 1.0
    for i, result in enumerate(results):
        assert result.scores.tolist() == [float(i)]
        assert len(result.batch_sizes) == 1 and 1 <= result.batch_sizes[0] <= 8


async def test_a_lone_window_is_dispatched_after_about_max_wait(make_batcher):
    scorer = FakeScorer()
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=80)
    submitted = time.monotonic()
    result = await batcher.submit("m", windows(1), soon())
    waited = scorer.calls[0].start - submitted
    assert 0.07 <= waited < 0.3  # it waited for company, but not much longer than max_wait
    assert result.batch_sizes == [1]
    assert result.queue_ms == pytest.approx(waited * 1000.0, abs=30.0)


async def test_a_full_batch_does_not_wait_for_max_wait(make_batcher):
    scorer = FakeScorer()
    batcher = make_batcher({"m": scorer}, max_batch_size=4, max_wait_ms=2000)
    submitted = time.monotonic()
    result = await batcher.submit("m", windows(1, 2, 3, 4), soon())
    assert time.monotonic() - submitted < 0.5
    assert result.batch_sizes == [4]


async def test_a_window_that_waited_behind_a_batch_is_dispatched_once_the_worker_is_free(make_batcher):
    scorer = FakeScorer(gated=True)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=150)
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    second = asyncio.create_task(batcher.submit("m", windows(2), soon()))
    await asyncio.sleep(0.3)  # longer than max_wait: the second window's wait is over
    released = time.monotonic()
    scorer.release()
    assert (await first).scores.tolist() == [1.0]
    assert (await second).scores.tolist() == [2.0]
    calls = scorer.calls
    assert [c.ids for c in calls] == [(1.0,), (2.0,)]
    assert calls[1].start - released < 0.075  # not another max_wait (0.15 s) after the worker got free


async def test_a_request_longer_than_max_batch_size_spans_several_batches(make_batcher):
    scorer = FakeScorer()
    batcher = make_batcher({"m": scorer}, max_batch_size=4)
    ids = list(range(1, 11))
    result = await batcher.submit("m", windows(*ids), soon())
    np.testing.assert_array_equal(result.scores, np.array(ids, dtype=np.float32))
    assert result.batch_sizes == [4, 4, 2]
    assert [len(c.ids) for c in scorer.calls] == [4, 4, 2]
    assert [i for c in scorer.calls for i in c.ids] == [float(i) for i in ids]


# --- batch shapes: a padding device (CUDA graphs, the simulated H200) -------------------------------

POWERS = (1, 2, 4, 8, 16, 32, 64)


def linear_shapes(base_ms: float = 0.9, per_window_ms: float = 0.68) -> BatchShapes:
    """Shapes timed like the simulated H200: a forward of shape s takes base + per_window x s."""
    shapes = BatchShapes(POWERS)
    for size in POWERS:
        shapes.observe(size, (base_ms + per_window_ms * size) / 1000.0)
    return shapes


def test_shapes_pad_up_to_the_next_size():
    shapes = BatchShapes(POWERS)
    assert [shapes.padded(n) for n in (1, 3, 8, 9, 33, 64)] == [1, 4, 8, 16, 64, 64]
    assert shapes.padded(65) == 65  # past the largest shape, nothing is padded


@pytest.mark.parametrize(
    ("waiting", "taken"), [(33, 32), (40, 32), (17, 16), (5, 4), (32, 32), (64, 64), (1, 1)]
)
def test_a_batch_is_trimmed_to_the_shape_below_when_padding_costs_more(waiting, taken):
    # 33 windows padded to 64 take 44.4 ms (743 windows/s); 32 take 22.7 ms (1,412/s): the 33rd waits.
    assert linear_shapes().take(waiting) == taken


def test_trimming_follows_the_measured_times_not_the_sizes():
    # a GPU at small batches: every shape up to 16 takes the same 5 ms, so 9 windows go at once;
    # past 16 the time grows with the shape, and padding 17 to 32 costs more than the 17th window waiting
    shapes = BatchShapes(POWERS)
    for size in POWERS:
        shapes.observe(size, 0.005 if size <= 16 else 0.005 * size / 16)
    assert [shapes.take(n) for n in (3, 9, 15, 17, 33)] == [3, 9, 15, 16, 32]


def test_unmeasured_shapes_take_everything_until_the_padded_shape_is_timed():
    shapes = BatchShapes(POWERS)
    assert shapes.take(33) == 33  # nothing known: run it, and measure the 64 shape
    shapes.observe(33, 0.044)
    assert shapes.forward_s == {64: 0.044}
    assert shapes.take(33) == 32  # 32 assumed to take half of 64's time: worth trying
    shapes.observe(32, 0.040)  # it turned out slow: 800 windows/s against 750
    assert shapes.take(33) == 32
    shapes.observe(32, 0.060)  # now slower than padding (moving average 0.044)
    assert shapes.take(33) == 33


def test_shapes_must_be_positive():
    with pytest.raises(ValueError):
        BatchShapes([])
    with pytest.raises(ValueError):
        BatchShapes([0, 4])


def slow_shapes() -> BatchShapes:
    """Linear shapes a thousand times slower: same trimming, and a gated forward never reaches its
    expected end, so the next batch is collected only once it ends (see the pipelining tests below)."""
    return linear_shapes(900.0, 680.0)


async def test_trimmed_windows_lead_the_next_batch_in_order(make_batcher):
    scorer = FakeScorer(gated=True)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=1, shapes=slow_shapes())
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    rest = asyncio.create_task(batcher.submit("m", windows(*range(2, 8)), soon()))  # 6 windows wait
    later = asyncio.create_task(batcher.submit("m", windows(8, 9), soon()))
    await wait_until(lambda: batcher.depth("m") == 8)
    scorer.release()
    assert (await first).scores.tolist() == [1.0]
    assert (await rest).scores.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert (await later).scores.tolist() == [8.0, 9.0]
    # 8 waiting make a full shape; had 6 waited alone, they would have gone as 4 then 2
    assert [c.ids for c in scorer.calls] == [(1.0,), tuple(float(i) for i in range(2, 10))]


@pytest.mark.parametrize(
    ("shapes", "batches"),
    [
        (slow_shapes, [(1.0,), (2.0, 3.0, 4.0, 5.0), (6.0, 7.0)]),  # 6 would be padded to 8: 4, then 2
        (None, [(1.0,), (2.0, 3.0, 4.0, 5.0, 6.0, 7.0)]),  # a device that pads nothing: all 6 at once
    ],
)
async def test_a_batch_over_a_shape_runs_as_that_shape_and_its_rest_goes_next(make_batcher, shapes, batches):
    scorer = FakeScorer(gated=True)
    batcher = make_batcher(
        {"m": scorer}, max_batch_size=8, max_wait_ms=1, shapes=shapes() if shapes else None
    )
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    rest = asyncio.create_task(batcher.submit("m", windows(*range(2, 8)), soon()))
    await wait_until(lambda: batcher.depth("m") == 6)
    scorer.release()
    await first
    assert (await rest).scores.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert [c.ids for c in scorer.calls] == batches
    assert batcher.depth("m") == 0 and batcher.idle


# --- pipelining: the next batch waits on the device thread, not in this loop ------------------------


async def test_the_next_batch_is_queued_behind_a_running_forward_before_it_ends(make_batcher):
    """With the forward time measured (here 0.2 s a window; the forward really takes 0.3 s), the
    next batch is collected about ``_LEAD_S`` before the running forward should end and queued on the
    device thread, which starts it the moment the first ends: the device never waits for this loop."""
    scorer = FakeScorer(delay=0.3)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, window_s=0.2)
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    started = time.monotonic()
    second = asyncio.create_task(batcher.submit("m", windows(2, 3), soon()))
    await wait_until(lambda: batcher.depth("m") == 2)
    await wait_until(lambda: batcher.depth("m") == 0)
    dispatched = time.monotonic()
    assert not scorer.calls  # the first forward is still running
    assert 0.15 < dispatched - started < 0.25
    assert (await first).scores.tolist() == [1.0] and (await second).scores.tolist() == [2.0, 3.0]
    one, two = scorer.calls
    assert two.start - one.end < 0.02


@pytest.mark.parametrize(("waiting", "queued_ahead"), [(1, False), (8, True)])
async def test_only_a_batch_worth_it_is_queued_behind_a_running_forward(make_batcher, waiting, queued_ahead):
    """Shapes timed like the simulated H200, a hundred times slower: one window alone scores at 44 % of
    the best shape's rate and waits for the device to be free (and for company); eight, at 88 %, are
    queued behind the running forward."""
    scorer = FakeScorer(delay=0.4)  # expected 0.158 s for the first forward (one window)
    batcher = make_batcher({"m": scorer}, max_batch_size=64, shapes=linear_shapes(90.0, 68.0))
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    rest = asyncio.create_task(batcher.submit("m", windows(*range(2, 2 + waiting)), soon()))
    await wait_until(lambda: batcher.depth("m") == waiting)
    await wait_until(lambda: batcher.depth("m") == 0, timeout=3.0)
    assert (not scorer.calls) is queued_ahead  # the first forward was still running when they left
    await asyncio.gather(first, rest)


async def test_a_forward_past_its_expected_end_is_waited_for_and_later_windows_join_one_batch(make_batcher):
    scorer = FakeScorer(gated=True)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=1, window_s=0.001)
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    await asyncio.sleep(0.02)  # expected to take 1 ms: it has overrun
    rest = asyncio.create_task(batcher.submit("m", windows(2, 3, 4), soon()))
    await asyncio.sleep(0.02)
    later = asyncio.create_task(batcher.submit("m", windows(5), soon()))
    await wait_until(lambda: batcher.depth("m") == 4)
    scorer.release()
    await asyncio.gather(first, rest, later)
    assert [c.ids for c in scorer.calls] == [(1.0,), (2.0, 3.0, 4.0, 5.0)]


async def test_without_a_measured_forward_time_the_next_batch_waits_for_the_running_one(make_batcher):
    scorer = FakeScorer(gated=True)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=1)
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    rest = asyncio.create_task(batcher.submit("m", windows(2), soon()))
    await asyncio.sleep(0.05)
    assert batcher.depth("m") == 1  # still queued: nothing says when the running forward ends
    scorer.release()
    await asyncio.gather(first, rest)


async def test_a_worker_crash_answers_both_the_running_and_the_queued_batch(make_batcher):
    scorer = FakeScorer(delay=0.2)
    observer = _BatchHookFailsOnce()
    batcher = make_batcher({"m": scorer}, observer=observer, window_s=0.1, restart_delay_s=0.05)
    first = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    second = asyncio.create_task(batcher.submit("m", windows(2), soon()))
    await wait_until(lambda: batcher.depth("m") == 1)
    await wait_until(lambda: batcher.depth("m") == 0)  # queued behind the first forward
    for task in (first, second):
        with pytest.raises(InferenceFailed):
            await asyncio.wait_for(task, 2.0)
    await wait_until(lambda: batcher.alive)
    assert (await batcher.submit("m", windows(3), soon())).scores.tolist() == [3.0]
    await asyncio.wait_for(batcher.drain(), 2.0)  # every window was accounted for


# --- refusals --------------------------------------------------------------------------------------


async def test_queue_full_is_refused_at_once_and_nothing_is_enqueued(make_batcher):
    scorer = FakeScorer(gated=True)
    observer = RecordingObserver()
    batcher = make_batcher({"m": scorer}, max_batch_size=2, queue_size=4, observer=observer)
    running = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)  # the worker holds window 1; the queue is empty again
    queued = asyncio.create_task(batcher.submit("m", windows(10, 11, 12), soon()))
    await wait_until(lambda: batcher.depth("m") == 3)
    assert ("m", 3) in observer.depths

    with pytest.raises(QueueFull) as refused:
        await asyncio.wait_for(batcher.submit("m", windows(20, 21), soon()), 0.05)  # 2 > 1 slot left
    assert isinstance(refused.value.retry_after_s, int)
    assert refused.value.retry_after_s >= 1
    assert batcher.depth("m") == 3  # refused whole: not even the window that would have fitted
    with pytest.raises(TooManyWindows):  # could never fit: refused as too long, not "retry later"
        await asyncio.wait_for(batcher.submit("m", windows(*range(30, 35)), soon()), 0.05)  # > queue_size
    batcher.last_batch_s = 2.5  # the hint grows with the time a batch takes
    with pytest.raises(QueueFull) as refused:
        await batcher.submit("m", windows(20, 21), soon())
    assert refused.value.retry_after_s >= math.ceil(2.5)
    assert batcher.depth("m") == 3
    assert observer.refusals == ["queue_full", "too_long", "queue_full"]  # voxguard_rejected{reason}
    batcher.admit("m")  # one more window fits: a request is let through to decoding

    fits = asyncio.create_task(batcher.submit("m", windows(13), soon()))  # exactly the last slot
    await wait_until(lambda: batcher.depth("m") == 4)
    with pytest.raises(QueueFull):  # full: refused before the request is even decoded
        batcher.admit("m")
    scorer.release()
    assert (await running).scores.tolist() == [1.0]
    assert (await queued).scores.tolist() == [10.0, 11.0, 12.0]
    assert (await fits).scores.tolist() == [13.0]
    assert scorer.seen() == {1.0, 10.0, 11.0, 12.0, 13.0}


async def test_unknown_model(make_batcher):
    batcher = make_batcher({"a": FakeScorer("a"), "b": FakeScorer("b")})
    with pytest.raises(UnknownModel) as refused:
        await batcher.submit("nope", windows(1), soon())
    assert refused.value.known == ["a", "b"]
    assert "nope" in str(refused.value)
    assert isinstance(refused.value, ServingError)
    assert batcher.models == ["a", "b"]


def test_a_batcher_needs_a_model():
    with pytest.raises(ValueError):
        Batcher({})


# --- deadlines and cancellation --------------------------------------------------------------------


async def test_deadline_passing_in_the_queue_raises_and_skips_the_windows(make_batcher):
    scorer = FakeScorer(gated=True)
    observer = RecordingObserver()
    batcher = make_batcher({"m": scorer}, max_batch_size=8, observer=observer)
    running = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit("m", windows(10, 11), soon(0.1))
    assert 0.08 <= time.monotonic() - started < 0.5  # at its deadline, not when the slow batch ends
    scorer.release()
    assert (await running).scores.tolist() == [1.0]
    await wait_until(lambda: observer.drops)
    assert len(observer.drops) == 1
    model, reason, count = observer.drops[0]
    assert (model, count) == ("m", 2)
    assert reason in ("expired", "cancelled")
    assert scorer.seen() == {1.0}
    assert (await batcher.submit("m", windows(2), soon())).scores.tolist() == [2.0]
    assert scorer.seen() == {1.0, 2.0}
    assert observer.drops == [(model, reason, count)]


async def test_a_deadline_already_past_is_refused_without_computing(make_batcher):
    scorer = FakeScorer()
    observer = RecordingObserver()
    batcher = make_batcher({"m": scorer}, max_batch_size=1, observer=observer)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit("m", windows(5), time.monotonic() - 1.0)
    await wait_until(lambda: observer.drops)
    assert observer.drops[0][0] == "m" and observer.drops[0][2] == 1
    assert (await batcher.submit("m", windows(6), soon())).scores.tolist() == [6.0]
    assert scorer.seen() == {6.0}


async def test_cancelled_request_is_dropped_without_computing(make_batcher):
    scorer = FakeScorer(gated=True)
    observer = RecordingObserver()
    batcher = make_batcher({"m": scorer}, max_batch_size=8, observer=observer)
    running = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    gone = asyncio.create_task(batcher.submit("m", windows(10, 11, 12), soon()))
    await wait_until(lambda: batcher.depth("m") == 3)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    scorer.release()
    assert (await running).scores.tolist() == [1.0]
    await wait_until(lambda: observer.drops)
    assert observer.drops == [("m", "cancelled", 3)]
    assert scorer.seen() == {1.0}
    assert (await batcher.submit("m", windows(2), soon())).scores.tolist() == [2.0]
    assert scorer.seen() == {1.0, 2.0}


async def test_futures_of_gone_clients_are_never_set(make_batcher, loop_errors, caplog):
    """Clients that leave (cancelled, deadline passed) while their windows run: nothing is set on their
    futures, nothing reaches the loop's exception handler, and the worker keeps going."""
    scorer = FakeScorer(gated=True, poison=POISON)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=30)
    cancelled = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    timed_out = asyncio.create_task(batcher.submit("m", windows(2), soon(0.1)))
    await wait_until(scorer.entered.is_set)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    with pytest.raises(DeadlineExceeded):
        await timed_out
    scorer.release()
    await wait_until(lambda: scorer.calls)
    assert scorer.calls[0].ids == (1.0, 2.0)  # both were already running when their clients left

    # the same inside a failing batch that is retried window by window
    scorer.entered.clear()
    scorer.gate.clear()
    poisoned = asyncio.create_task(batcher.submit("m", windows(POISON), soon()))
    leaving = asyncio.create_task(batcher.submit("m", windows(3), soon()))
    await wait_until(scorer.entered.is_set)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    scorer.release()
    with pytest.raises(InferenceFailed):
        await poisoned

    assert (await batcher.submit("m", windows(4), soon())).scores.tolist() == [4.0]
    gc.collect()
    await asyncio.sleep(0.01)
    assert loop_errors == []
    assert "InvalidStateError" not in caplog.text
    assert batcher.restarts == 0
    assert batcher.alive


# --- failures ----------------------------------------------------------------------------------------


async def test_a_poison_window_fails_only_its_own_request(make_batcher, caplog):
    scorer = FakeScorer(poison=POISON)
    batcher = make_batcher({"m": scorer}, max_batch_size=8, max_wait_ms=50)
    results = await asyncio.gather(
        batcher.submit("m", windows(1, 2), soon()),
        batcher.submit("m", windows(POISON), soon()),
        batcher.submit("m", windows(3), soon()),
        return_exceptions=True,
    )
    assert scorer.calls[0].ids == (1.0, 2.0, POISON, 3.0)  # they did share a batch
    first, poisoned, last = results
    assert isinstance(first, ScoredWindows) and first.scores.tolist() == [1.0, 2.0]
    assert isinstance(last, ScoredWindows) and last.scores.tolist() == [3.0]
    assert isinstance(poisoned, InferenceFailed)
    assert re.fullmatch(r"[0-9a-f]{12}", poisoned.error_id)
    assert poisoned.error_id in str(poisoned)
    assert poisoned.error_id in caplog.text  # the response's error id leads to the log line

    after = await batcher.submit("m", windows(4, 5), soon())
    assert after.scores.tolist() == [4.0, 5.0]
    assert batcher.alive and batcher.restarts == 0


async def test_a_request_with_one_poison_window_fails_and_its_other_windows_do_not_leak(make_batcher):
    scorer = FakeScorer(poison=POISON)
    batcher = make_batcher({"m": scorer}, max_batch_size=2)
    with pytest.raises(InferenceFailed):
        await batcher.submit("m", windows(1, POISON, 3, 4, 5), soon())
    await asyncio.wait_for(batcher.drain(), 2.0)  # every window was accounted for
    assert not batcher.alive


async def test_the_worker_is_restarted_after_it_dies(make_batcher, monkeypatch, caplog):
    scorer = FakeScorer()
    batcher = make_batcher({"m": scorer}, restart_delay_s=0.15)
    collect = batcher._collect
    crashes = 0

    async def crash_once(model: str):
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("worker bug")
        return await collect(model)

    monkeypatch.setattr(batcher, "_collect", crash_once)
    assert batcher.alive
    waiting = asyncio.create_task(batcher.submit("m", windows(7), soon()))
    await wait_until(lambda: not batcher.alive)
    died = time.monotonic()
    assert batcher.restarts == 1
    await asyncio.sleep(0.05)
    assert not batcher.alive  # still inside restart_delay_s
    await wait_until(lambda: batcher.alive)
    assert time.monotonic() - died >= 0.12
    assert batcher.restarts == 1
    assert "batch worker died" in caplog.text
    assert (await waiting).scores.tolist() == [7.0]  # it stayed queued and the new worker served it
    assert (await batcher.submit("m", windows(8), soon())).scores.tolist() == [8.0]
    await asyncio.wait_for(batcher.drain(), 2.0)
    assert batcher.restarts == 1  # drain's stop is not a death


class _BatchHookFailsOnce(RecordingObserver):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def batch(self, model: str, size: int, queue_wait_s: list[float], inference_s: float) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("metrics bug")
        super().batch(model, size, queue_wait_s, inference_s)


async def test_a_worker_crash_mid_batch_still_answers_the_client_and_keeps_serving(make_batcher):
    scorer = FakeScorer()
    batcher = make_batcher({"m": scorer}, observer=_BatchHookFailsOnce(), restart_delay_s=0.05)
    with pytest.raises(ServingError):  # InferenceFailed, or DeadlineExceeded at the latest
        await asyncio.wait_for(batcher.submit("m", windows(1), soon(0.3)), 2.0)
    await wait_until(lambda: batcher.alive)
    assert batcher.restarts == 1
    assert (await batcher.submit("m", windows(2), soon())).scores.tolist() == [2.0]


async def test_drain_completes_after_a_worker_crash_mid_batch(make_batcher):
    scorer = FakeScorer()
    batcher = make_batcher({"m": scorer}, observer=_BatchHookFailsOnce(), restart_delay_s=0.05)
    with pytest.raises(ServingError):
        await asyncio.wait_for(batcher.submit("m", windows(1), soon(0.3)), 2.0)
    await wait_until(lambda: batcher.alive)
    assert (await batcher.submit("m", windows(2), soon())).scores.tolist() == [2.0]
    await asyncio.wait_for(batcher.drain(), 0.5)


async def test_an_empty_request_is_refused_and_does_not_wedge_drain(make_batcher):
    batcher = make_batcher({"m": FakeScorer()})
    with pytest.raises(ValueError, match="at least one window"):
        await batcher.submit("m", np.zeros((0, T), dtype=np.float32), soon())
    await asyncio.wait_for(batcher.drain(), 0.5)


# --- several models ---------------------------------------------------------------------------------


async def test_models_take_turns_never_mix_and_never_overlap(make_batcher):
    device = Device()
    a = FakeScorer("a", device=device, delay=0.01)
    b = FakeScorer("b", device=device, delay=0.01)
    batcher = make_batcher({"a": a, "b": b}, max_batch_size=4)
    a_ids = [list(range(1 + 2 * k, 3 + 2 * k)) for k in range(8)]  # 16 windows in requests of 2
    b_ids = [[100 + i for i in ids] for ids in a_ids]
    requests = [req for ai, bi in zip(a_ids, b_ids, strict=True) for req in (("a", ai), ("b", bi))]
    results = await asyncio.gather(*(batcher.submit(m, windows(*ids), soon()) for m, ids in requests))
    for (_, ids), result in zip(requests, results, strict=True):
        assert result.scores.tolist() == [float(i) for i in ids]

    assert device.overlaps == 0
    for call in device.calls:
        assert all((i < 100) == (call.model == "a") for i in call.ids)  # a batch never mixes models
    for earlier, later in zip(device.calls, device.calls[1:], strict=False):
        assert earlier.end <= later.start
    order = [c.model for c in device.calls]
    assert order == ["a", "b"] * 4  # both had load the whole time: strict turns
    assert a.seen() == {float(i) for ids in a_ids for i in ids}
    assert b.seen() == {float(i) for ids in b_ids for i in ids}


async def test_a_busy_model_does_not_starve_another(make_batcher):
    device = Device()
    a = FakeScorer("a", device=device, gated=True)
    b = FakeScorer("b", device=device)
    batcher = make_batcher({"a": a, "b": b}, max_batch_size=4)
    backlog = asyncio.create_task(batcher.submit("a", windows(*range(1, 41)), soon()))
    await wait_until(a.entered.is_set)
    assert batcher.depth("a") == 36
    small = asyncio.create_task(batcher.submit("b", windows(100), soon()))
    await wait_until(lambda: batcher.depth("b") == 1)
    a.release()
    assert (await small).scores.tolist() == [100.0]
    assert [c.model for c in device.calls[:2]] == ["a", "b"]  # served right after the running batch
    assert (await backlog).batch_sizes == [4] * 10
    assert device.overlaps == 0


# --- shutdown ---------------------------------------------------------------------------------------


async def test_drain_finishes_queued_work_then_refuses(make_batcher):
    scorer = FakeScorer(delay=0.01)
    batcher = make_batcher({"m": scorer}, max_batch_size=4)
    tasks = [asyncio.create_task(batcher.submit("m", windows(2 * k, 2 * k + 1), soon())) for k in range(10)]
    await asyncio.sleep(0)  # let every request enqueue
    assert batcher.depth("m") > 0
    await batcher.drain()
    drained = time.monotonic()
    assert scorer.seen() == {float(i) for i in range(20)}
    assert max(c.end for c in scorer.calls) <= drained
    assert not batcher.alive and not batcher.admission.accepting
    # the worker is gone, so this only completes if drain() left every future resolved
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    for k, result in enumerate(results):
        assert result.scores.tolist() == [2.0 * k, 2.0 * k + 1]
    with pytest.raises(ShuttingDown):
        await batcher.submit("m", windows(99), soon())
    assert batcher.restarts == 0
    assert 99.0 not in scorer.seen()


async def test_drain_of_an_idle_batcher_returns_at_once(make_batcher):
    batcher = make_batcher({"m": FakeScorer()})
    started = time.monotonic()
    await batcher.drain()
    assert time.monotonic() - started < 0.5
    assert not batcher.alive
    with pytest.raises(ShuttingDown):
        await batcher.submit("m", windows(1), soon())


async def test_a_closed_admission_refuses_new_work_but_finishes_queued_work(make_batcher):
    scorer = FakeScorer(gated=True)
    batcher = make_batcher({"m": scorer}, max_batch_size=2)
    running = asyncio.create_task(batcher.submit("m", windows(1), soon()))
    await wait_until(scorer.entered.is_set)
    queued = asyncio.create_task(batcher.submit("m", windows(2, 3, 4), soon()))
    await wait_until(lambda: batcher.depth("m") == 3)
    batcher.admission.stop()
    assert not batcher.admission.accepting
    with pytest.raises(ShuttingDown):
        await batcher.submit("m", windows(5), soon())
    scorer.release()
    assert (await running).scores.tolist() == [1.0]
    assert (await queued).scores.tolist() == [2.0, 3.0, 4.0]
    assert batcher.alive  # only drain() stops the worker
    assert 5.0 not in scorer.seen()


async def test_a_request_larger_than_the_whole_queue_is_refused_as_too_long(make_batcher):
    batcher = make_batcher({"m": FakeScorer()}, queue_size=4)
    with pytest.raises(TooManyWindows):
        await batcher.submit("m", windows(1, 2, 3, 4, 5), soon())
    assert (await batcher.submit("m", windows(1, 2, 3, 4), soon())).scores.tolist() == [1.0, 2.0, 3.0, 4.0]
