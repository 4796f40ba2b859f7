"""The admission rule (``voxguard.serving.admission``): directly, and through both wirings, which must
refuse the same request the same way: the in-process batcher with its live numbers, and a front-end of the
split wiring with the engine's numbers from the status board."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from voxguard.serving import errors
from voxguard.serving.admission import Admission, Load
from voxguard.serving.batching import Batcher
from voxguard.serving.channel import Welcome, encode, receive
from voxguard.serving.remote import RemoteEngine
from voxguard.serving.shm import StatusBoard, make_folder, write_catalogue
from voxguard.serving.simulated import SimulatedDetector
from voxguard.settings import Settings

QUEUE, MAX_BATCH, BATCH_S = 6, 4, 2.5


class Recorder:
    """An observer that keeps the refusals (``voxguard_rejected`` reasons) and ignores the rest."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def rejected(self, reason: str) -> None:
        self.reasons.append(reason)

    def batch(self, *_: object) -> None:
        pass

    def dropped(self, *_: object) -> None:
        pass

    def queue_depth(self, *_: object) -> None:
        pass


def admission() -> tuple[Admission, Recorder]:
    recorder = Recorder()
    return Admission(["aasist"], QUEUE, MAX_BATCH, recorder), recorder


def refusal(check) -> errors.ServingError | None:
    try:
        check()
    except errors.ServingError as error:
        return error
    return None


def full_behind(queued: int) -> errors.QueueFull:
    return errors.QueueFull.behind("aasist", queued, BATCH_S, MAX_BATCH)


# --- the rule ------------------------------------------------------------------------------------------


def test_a_request_that_fits_is_let_in_and_nothing_is_counted():
    rule, recorder = admission()
    rule.check("aasist", QUEUE - 2, Load(queued=2, batch_s=BATCH_S))
    rule.check("aasist", 3, Load(queued=0, batch_s=BATCH_S, room=3))
    assert recorder.reasons == []


@pytest.mark.parametrize(
    ("model", "windows", "load", "expected"),
    [
        ("aasist", 1, Load(QUEUE, BATCH_S), full_behind(QUEUE)),
        ("aasist", 3, Load(QUEUE - 2, BATCH_S), full_behind(QUEUE - 2)),
        ("aasist", 3, Load(0, BATCH_S, room=2), full_behind(0)),
        ("aasist", QUEUE + 1, Load(0, BATCH_S), errors.TooManyWindows(QUEUE + 1, QUEUE)),
        ("aasist-l", 1, Load(QUEUE, BATCH_S), errors.UnknownModel("aasist-l", ["aasist"])),
        ("aasist-l", 1, Load(0, BATCH_S, down="gone"), errors.EngineUnavailable("gone")),
        ("aasist-l", 1, Load(0, BATCH_S, draining=True, down="gone"), errors.ShuttingDown()),
    ],
    ids=["full", "too-little-room", "no-free-slots", "too-long", "unknown-model", "down", "draining"],
)
def test_each_refusal_and_which_comes_first(model, windows, load, expected):
    rule, recorder = admission()
    with pytest.raises(errors.ServingError) as refused:
        rule.check(model, windows, load)
    assert refused.value == expected
    assert recorder.reasons == [expected.reason]


def test_a_queue_full_refusal_asks_to_come_back_once_the_windows_ahead_are_scored():
    rule, _ = admission()
    with pytest.raises(errors.QueueFull) as refused:
        rule.check("aasist", 1, Load(QUEUE, BATCH_S))
    assert refused.value.retry_after_s == math.ceil(BATCH_S * (QUEUE / MAX_BATCH + 1))


def test_a_closed_gate_refuses_new_work_but_not_work_it_admitted_before():
    rule, recorder = admission()
    assert rule.accepting
    rule.stop()
    assert not rule.accepting
    with pytest.raises(errors.ShuttingDown):
        rule.check("aasist", 1, Load(0, BATCH_S))
    rule.check("aasist", 2, Load(0, BATCH_S), admitted=True)  # decoded meanwhile: answered by the drain
    with pytest.raises(errors.QueueFull):  # but it still needs room
        rule.check("aasist", 2, Load(QUEUE, BATCH_S), admitted=True)
    assert recorder.reasons == ["shutting_down", "queue_full"]


def test_work_that_would_pass_its_deadline_behind_the_backlog_is_refused_as_overloaded():
    rule, recorder = admission()
    now = 100.0
    rule.in_time(windows=10, backlog=0, window_s=1.0, deadline=now + 1.0, now=now)  # idle: always
    rule.in_time(windows=10, backlog=5, window_s=1.0, deadline=now + 15.0, now=now)  # just in time
    with pytest.raises(errors.Overloaded) as refused:
        rule.in_time(windows=10, backlog=5, window_s=1.0, deadline=now + 14.9, now=now)
    assert refused.value == errors.Overloaded(5.0, 10.0) and refused.value.retry_after_s == 5
    assert recorder.reasons == ["overloaded"]


def test_the_latest_deadline_let_in_is_what_a_drain_waits_for():
    rule, _ = admission()
    assert rule.latest_deadline == 0.0
    for deadline in (5.0, 9.0, 7.0):
        rule.queued(deadline)
    assert rule.latest_deadline == 9.0


# --- both wirings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    model: str = "aasist"
    windows: int = 1
    queued: int = 0  # windows waiting in the engine's queue
    draining: bool = False
    admitted: bool = False


CASES = {
    "fits": Case(windows=2, queued=QUEUE - 2),
    "full": Case(queued=QUEUE),
    "too-little-room": Case(windows=3, queued=QUEUE - 2),
    "too-long": Case(windows=QUEUE + 1),
    "unknown-model": Case(model="aasist-l"),
    "draining": Case(draining=True),
    "draining-admitted": Case(windows=2, draining=True, admitted=True),
}


async def in_process(case: Case) -> tuple[errors.ServingError | None, list[str]]:
    """The refusal of the batcher that scores in this process (no worker: the queue stays as filled)."""
    recorder = Recorder()
    batcher = Batcher(
        {"aasist": SimulatedDetector("aasist", 0, 0)},
        max_batch_size=MAX_BATCH,
        queue_size=QUEUE,
        observer=recorder,
    )
    if case.queued:
        batcher.enqueue("aasist", list(np.zeros((case.queued, 4), np.float32)), float("inf"))
    batcher.last_batch_s = BATCH_S
    if case.draining:
        batcher.admission.stop()
    error = refusal(lambda: batcher.admit(case.model, case.windows, admitted=case.admitted))
    return error, recorder.reasons


class StandInEngine:
    """An engine process that only welcomes front-ends, on a shared folder of its own; it keeps each
    link, and can stop and start listening as a restarted engine process would. Tests write the status
    board as the engine would."""

    def __init__(self, frontends: int = 1) -> None:
        self.folder = make_folder()
        self.board = StatusBoard(self.folder / "status", frontends, 1, create=True)
        write_catalogue(self.folder, ({"aasist": SimulatedDetector("aasist", 0, 0).info}, MAX_BATCH))
        self.links: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.folder / "engine.sock"))

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await receive(reader)  # hello
        writer.write(encode(Welcome()))
        self.links.append(writer)
        await reader.read()

    def front_end(self, index: int, recorder: Recorder) -> RemoteEngine:
        return RemoteEngine(Settings(queue_size=QUEUE).batching, self.folder, index, self.board, recorder)


@contextlib.asynccontextmanager
async def front_end() -> AsyncIterator[tuple[RemoteEngine, StatusBoard, Recorder]]:
    """A front-end's engine linked to a stand-in engine process."""
    engine = StandInEngine()
    await engine.start()
    recorder = Recorder()
    front = engine.front_end(0, recorder)
    await front.start()
    try:
        yield front, engine.board, recorder
    finally:
        await front.drain()
        engine.stop()
        shutil.rmtree(engine.folder)


async def split(case: Case, engine_draining: bool) -> tuple[errors.ServingError | None, list[str]]:
    """The refusal of a front-end of the split wiring, which reads the engine's state off the board; a
    drain is the engine's (on the board) or the front-end's own."""
    async with front_end() as (front, board, recorder):
        board.engine_beat(0.0, True, not (case.draining and engine_draining), 0.001, BATCH_S, [case.queued])
        if case.draining and not engine_draining:
            front.admission.stop()
        return refusal(
            lambda: front.admit(case.model, case.windows, admitted=case.admitted)
        ), recorder.reasons


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("engine_draining", [True, False], ids=["engine-drains", "front-end-drains"])
async def test_both_wirings_refuse_the_same_request_the_same_way(case, engine_draining):
    local, remote = await in_process(case), await split(case, engine_draining)
    assert local == remote
    error, reasons = local
    assert reasons == ([] if error is None else [error.reason])
    assert (error is None) == (case in (CASES["fits"], CASES["draining-admitted"]))


async def test_a_front_end_refuses_when_its_slots_are_taken_or_the_engine_is_gone():
    """What only a front-end has: slots of its own to copy windows into, and a link that can break."""
    async with front_end() as (front, board, recorder):
        board.engine_beat(0.0, True, True, 0.001, BATCH_S, [0])
        front._pool.put(np.zeros((QUEUE - 1, front._pool.window), np.float32))  # windows still in flight
        with pytest.raises(errors.QueueFull):
            front.admit("aasist", 2)
        front.admit("aasist", 1)
        front._writer = None  # as when the link drops
        with pytest.raises(errors.EngineUnavailable):
            front.admit("aasist")
        assert recorder.reasons == ["queue_full", "engine_unavailable"]


async def test_a_front_end_is_down_on_the_board_from_losing_the_engine_until_it_links_again():
    """``/ready`` reads the board from whichever front-end answers; a front-end that lost the engine and
    has not linked to its restart yet must show there, or a peer says ready while this one answers 503."""

    async def until(condition) -> None:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)

    engine = StandInEngine(frontends=2)
    board = engine.board
    await engine.start()
    front = engine.front_end(0, Recorder())
    board.frontend_alive(1, True)  # the peer, linked
    await front.start()
    try:
        board.engine_beat(time.monotonic(), True, True, 0.001, BATCH_S, [0])
        assert board.frontends_down() == [] and front.not_ready_reason() is None
        engine.stop()  # the engine process dies: no link, and none to be made until it is back
        engine.links[0].close()
        await until(lambda: front._writer is None)
        assert board.frontends_down() == [0]
        await engine.start()  # its restart
        await until(lambda: len(engine.links) == 2 and front._writer is not None)
        assert board.frontends_down() == []
    finally:
        await front.drain()
        engine.stop()
        shutil.rmtree(engine.folder)
