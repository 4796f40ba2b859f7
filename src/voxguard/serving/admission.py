"""Who may queue windows on the device: one rule, whichever side of the process boundary asks.

The batcher asks with its live numbers as it queues a request (``batching.Batcher``); a front-end of the
split wiring asks with the engine process's numbers from the status board, before it sends anything
(``remote.RemoteEngine``). Both hold an :class:`Admission` and hand it a :class:`Load`, so a request is
refused the same way, with the same error and ``Retry-After`` (``errors``), in either wiring.

An ``Admission`` is also the gate a drain closes: :meth:`Admission.stop` refuses new work from then on,
and :attr:`Admission.latest_deadline` says how long the work already let in may take.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

from .errors import (
    EngineUnavailable,
    Overloaded,
    QueueFull,
    ServingError,
    ShuttingDown,
    TooManyWindows,
    UnknownModel,
)


class Refusals(Protocol):
    """Counts refusals by ``ServingError.reason`` (the ``voxguard_rejected`` metric)."""

    def rejected(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Load:
    """The engine as the asking side sees it, for one model."""

    queued: int  # windows of the model waiting for the device
    batch_s: float  # how long the last batch took: a queue-full refusal's Retry-After grows with it
    room: int | None = None  # free places this side holds for windows besides the queue (a front-end's slots)
    draining: bool = False  # the engine behind stopped admitting (a front-end's view of the engine process)
    down: str | None = None  # why no engine is there to take the work now, None while one is


class Admission:
    """The admission rule of one engine (or of one front-end's view of it), and its gate."""

    def __init__(
        self, models: Sequence[str], queue_size: int, max_batch_size: int, refusals: Refusals
    ) -> None:
        self.models = list(models)
        self.queue_size = queue_size
        self.max_batch_size = max_batch_size
        self._refusals = refusals
        self.accepting = True
        self.latest_deadline = 0.0

    def stop(self) -> None:
        """Refuse new work from now on (:class:`ShuttingDown`); work already admitted still runs."""
        self.accepting = False

    def check(self, model: str, windows: int, load: Load, *, admitted: bool = False) -> None:
        """Refuse ``windows`` windows of ``model`` if they cannot be queued now. Asked with 1 before a
        request is decoded, so a full server refuses it before doing any work, and again with the real
        count when it is submitted (``admitted``: a drain that began in between does not refuse it)."""
        if (not self.accepting or load.draining) and not admitted:
            self._refuse(ShuttingDown())
        if load.down is not None:
            self._refuse(EngineUnavailable(load.down))
        if model not in self.models:
            self._refuse(UnknownModel(model, list(self.models)))
        if windows > self.queue_size:
            self._refuse(TooManyWindows(windows, self.queue_size))
        room = self.queue_size - load.queued
        if load.room is not None:
            room = min(room, load.room)
        if room < windows:
            self._refuse(QueueFull.behind(model, load.queued, load.batch_s, self.max_batch_size))

    def in_time(
        self, windows: int, backlog: int, window_s: float, deadline: float, now: float | None = None
    ) -> None:
        """Refuse (:class:`Overloaded`) ``windows`` windows that would pass ``deadline`` behind the
        ``backlog`` windows ahead of them, at ``window_s`` of device time each. An idle device takes any
        request: its deadline already allows for its own windows."""
        backlog_s, needed_s = backlog * window_s, windows * window_s
        if backlog and (time.monotonic() if now is None else now) + backlog_s + needed_s > deadline:
            self._refuse(Overloaded(backlog_s, needed_s))

    def queued(self, deadline: float) -> None:
        """Work due by ``deadline`` was queued: a drain waits until then at the longest."""
        self.latest_deadline = max(self.latest_deadline, deadline)

    def _refuse(self, error: ServingError) -> NoReturn:
        self._refusals.rejected(error.reason)
        raise error
