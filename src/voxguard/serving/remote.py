"""The engine as a front-end process sees it: an :class:`~voxguard.serving.engine.Engine` in another
process.

:class:`RemoteEngine` writes a request's windows into this front-end's shared slots, sends their
numbers to the engine process and awaits one answer per submission. Cancelling the await (client gone,
deadline) tells the engine to drop the work; the slots come back when the engine says it let go of
them. Refusals that need no round trip (draining, a full queue, an engine that is down) are decided
here from the status board, before the request is decoded, as the single process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.options import WINDOW
from ..inference import ModelInfo
from ..settings import BatchingSettings
from .admission import Admission, Load
from .batching import BatchObserver, ScoredWindows, until_deadline
from .channel import Answer, Cancel, Hello, Message, Refused, Scored, Submit, encode, receive
from .errors import EngineUnavailable
from .shm import SlotPool, StatusBoard, read_catalogue

logger = logging.getLogger(__name__)

# The engine writes the board every 50 ms; this much silence means it is stuck or gone.
_STALE_S = 2.0
_RECONNECT_S = 0.1


@dataclass
class _Pending:
    future: asyncio.Future[ScoredWindows]
    taken: list[int]


class RemoteEngine:
    """Implements ``voxguard.serving.engine.Engine`` over the control socket and shared slots."""

    def __init__(
        self,
        batching: BatchingSettings,
        folder: Path,
        index: int,
        board: StatusBoard,
        observer: BatchObserver,
    ) -> None:
        self.index = index
        self.board = board
        self._socket_path = folder / "engine.sock"
        pool_path = folder / f"frontend-{index}-{os.getpid()}.slots"
        self._pool = SlotPool(pool_path, batching.queue_size, WINDOW, create=True)
        self._models, self._max_batch_size = read_catalogue(folder)
        self._model_index = {name: i for i, name in enumerate(self._models)}
        self.admission = Admission(self._models, batching.queue_size, self._max_batch_size, observer)
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count()
        self._connected = asyncio.Event()
        self._link: asyncio.Task[None] | None = None

    @property
    def models(self) -> dict[str, ModelInfo]:
        return self._models

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    async def start(self) -> None:
        """Connect to the engine (waiting while it loads) and keep reconnecting whenever it restarts."""
        self._link = asyncio.get_running_loop().create_task(self._keep_linked(), name="voxguard-engine-link")
        await self._connected.wait()

    async def _keep_linked(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self._socket_path))
            except (FileNotFoundError, ConnectionError):
                await asyncio.sleep(_RECONNECT_S)
                continue
            try:
                hello = Hello(self.index, str(self._pool.path), self._pool.slots, self._pool.window)
                writer.write(encode(hello))
                await receive(reader)  # welcome: the engine has our slots mapped
                self._writer = writer
                self._connected.set()
                self.board.frontend_alive(self.index, True)
                logger.info("front-end %d linked to the engine", self.index)
                while True:
                    self._answer(await receive(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                logger.error(
                    "front-end %d lost the engine; failing %d requests", self.index, len(self._pending)
                )
            except Exception:  # a bug on either side must not leave this front-end unlinked for good
                logger.exception("front-end %d: the engine link failed; reconnecting", self.index)
                await asyncio.sleep(_RECONNECT_S)
            finally:
                # Down on the board until linked again: /ready, answered by whichever front-end the
                # kernel picks, must not say ready while this one would refuse every request.
                self.board.frontend_alive(self.index, False)
                self._connected.clear()
                self._writer = None
                writer.close()
                self._fail_all()

    def _answer(self, message: Message) -> None:
        if not isinstance(message, Answer):
            raise ValueError(f"the engine sent {message!r} where an answer belongs")
        pending = self._pending.pop(message.request, None)
        if pending is None:
            return
        self._pool.release(pending.taken)
        future = pending.future
        if future.done():
            return
        if isinstance(message, Scored):
            future.set_result(message.scored)
        elif isinstance(message, Refused):
            future.set_exception(message.error)

    def _fail_all(self) -> None:
        """The engine is gone, and with it every view of our slots: fail what waited and free them all."""
        for pending in self._pending.values():
            self._pool.release(pending.taken)
            if not pending.future.done():
                pending.future.set_exception(EngineUnavailable("the engine process stopped; retry"))
        self._pending.clear()

    def admit(self, model: str, windows: int = 1, *, admitted: bool = False) -> None:
        """:meth:`Admission.check` with the engine's numbers from the status board, and this front-end's
        own: its free slots, and whether it is linked to an engine at all."""
        index = self._model_index.get(model)
        load = Load(
            queued=self.board.depth(index) if index is not None else 0,
            batch_s=self.board.batch_s,
            room=self._pool.free,
            draining=self._connected.is_set() and not self.board.engine_accepting,
            down=None if self._writer is not None else "the engine process is restarting; retry",
        )
        self.admission.check(model, windows, load, admitted=admitted)

    async def submit(
        self, model: str, windows: np.ndarray, deadline: float, *, admitted: bool = False
    ) -> ScoredWindows:
        self.admit(model, len(windows), admitted=admitted)
        taken = self._pool.put(windows)
        assert taken is not None and self._writer is not None  # admit checked both
        rid = next(self._ids)
        future: asyncio.Future[ScoredWindows] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(future, taken)
        self.admission.queued(deadline)
        self._writer.write(encode(Submit(rid, model, taken, deadline)))
        try:
            return await until_deadline(future, deadline)
        finally:
            if rid in self._pending and self._writer is not None:  # not answered: the engine drops it
                self._writer.write(encode(Cancel(rid)))

    def depth(self, model: str) -> int:
        return self.board.depth(self._model_index[model])

    @property
    def window_s(self) -> float:
        return self.board.window_s

    def not_ready_reason(self) -> str | None:
        if self._writer is None:
            return "the engine process is starting or restarting"
        if time.monotonic() - self.board.engine_heartbeat > _STALE_S:
            return "the engine process is not responding"
        if not self.board.engine_accepting:
            return "shutting down"
        if not self.board.engine_ready:
            return "models are warming up"
        if down := self.board.frontends_down():
            return f"front-end {', '.join(map(str, down))} of {self.board.frontends} is down or starting"
        return None

    @property
    def idle(self) -> bool:
        return not self._pending

    async def drain(self) -> None:
        """Stop admitting, wait for this front-end's own work, then unlink from the engine."""
        self.admission.stop()
        while self._pending and self._writer is not None:
            await asyncio.sleep(0.01)
        if self._link is not None:
            self._link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._link
        self._pool.close()
        self._pool.path.unlink(missing_ok=True)
