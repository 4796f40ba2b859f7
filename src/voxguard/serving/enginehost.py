"""The engine process's side: one per device, owning the detectors and the batcher for every front-end.

It loads and warms the models (on the device thread, where every forward and graph capture runs),
then answers submissions from the front-ends on a Unix socket (``voxguard.serving.channel``), reading
their windows in place from each front-end's shared slots (``voxguard.serving.shm``). Its state goes on
the status board every 50 ms, so a front-end refuses work the engine would refuse without asking it,
and any front-end's ``/ready`` sees a stalled engine. SIGTERM drains it: admitted work finishes, then it
exits. The process around it is started by ``voxguard.processes.supervisor``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

from .batching import ScoredWindows
from .channel import Answer, Cancel, Hello, Refused, Released, Scored, Submit, Welcome, encode, receive
from .engine import LocalEngine
from .errors import InferenceFailed, ServingError
from .shm import SlotPool, StatusBoard, write_catalogue
from .telemetry import Metrics

logger = logging.getLogger(__name__)

_BEAT_S = 0.05


class EngineHost:
    """Serves one :class:`LocalEngine` to the front-ends connected on ``socket_path``."""

    def __init__(self, engine: LocalEngine, board: StatusBoard, socket_path: Path, metrics: Metrics) -> None:
        self.engine = engine
        self.board = board
        self.socket_path = socket_path
        self.metrics = metrics
        self._models = list(engine.models)

    async def run(self, stop: asyncio.Event) -> None:
        """Warm up, serve until ``stop`` is set, then drain."""
        beat = asyncio.get_running_loop().create_task(self._beat())
        await self.engine.start()
        catalogue = (self.engine.models, self.engine.max_batch_size)
        write_catalogue(self.socket_path.parent, catalogue)
        self.socket_path.unlink(missing_ok=True)  # a crashed predecessor's
        server = await asyncio.start_unix_server(self._connection, path=str(self.socket_path))
        logger.info(
            "engine ready: models %s, %d windows a batch", ", ".join(self._models), self.engine.max_batch_size
        )
        await stop.wait()
        logger.info("engine draining")
        await self.engine.drain()
        server.close()
        beat.cancel()
        self.board.engine_beat(time.monotonic(), False, False, self.engine.window_s, 0.0, [])
        logger.info("engine drained and stopped")

    async def _beat(self) -> None:
        engine = self.engine
        while True:
            depths = [engine.depth(m) for m in self._models]
            ready = engine.not_ready_reason() is None
            window_s, batch_s = engine.window_s, engine.batcher.last_batch_s
            accepting = engine.admission.accepting
            self.board.engine_beat(time.monotonic(), ready, accepting, window_s, batch_s, depths)
            self.metrics.window_seconds.set(engine.window_s)
            await asyncio.sleep(_BEAT_S)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outbox = _Outbox(writer)
        admitted: dict[int, asyncio.Future[ScoredWindows]] = {}
        pool: SlotPool | None = None
        index = -1
        try:
            hello = await receive(reader)
            if not isinstance(hello, Hello):
                raise ValueError(f"expected a hello, got {hello!r}")
            index = hello.frontend
            pool = SlotPool(Path(hello.pool_path), hello.slots, hello.window, create=False)
            outbox.put(Welcome())
            logger.info("front-end %d connected", index)
            while True:
                message = await receive(reader)
                if isinstance(message, Submit):
                    self._admit(outbox, admitted, pool, message)
                elif isinstance(message, Cancel) and (future := admitted.get(message.request)) is not None:
                    future.cancel()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            dropped = len(admitted)
            for future in list(admitted.values()):
                future.cancel()
            writer.close()
            if pool is not None:
                _close_when_unused(pool)
            logger.info("front-end %d disconnected (%d requests dropped)", index, dropped)

    def _admit(
        self,
        outbox: _Outbox,
        admitted: dict[int, asyncio.Future[ScoredWindows]],
        pool: SlotPool,
        submit: Submit,
    ) -> None:
        """Queue a submission; its answer goes out when its future settles (no task per request: the
        front-end keeps the deadline and cancels, the batcher drops what expired or was cancelled)."""
        rid = submit.request
        try:
            future = self.engine.enqueue(submit.model, pool.views(submit.slots), submit.deadline)
        except ServingError as exc:
            outbox.put(Refused(rid, exc))
            return
        admitted[rid] = future

        def answer(done: asyncio.Future[ScoredWindows]) -> None:
            del admitted[rid]
            if done.cancelled():
                outbox.put(Released(rid))
            elif isinstance(exc := done.exception(), ServingError):
                outbox.put(Refused(rid, exc))
            elif exc is not None:
                error_id = uuid.uuid4().hex[:12]
                logger.error("submission failed in the engine (error id %s)", error_id, exc_info=exc)
                outbox.put(Refused(rid, InferenceFailed(error_id)))
            else:
                outbox.put(Scored(rid, done.result()))

        future.add_done_callback(answer)


class _Outbox:
    """Answers to one front-end, written together once per loop turn: a batch resolves dozens of
    requests at once, and one write for them all saves a system call each."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._messages: list[bytes] = []

    def put(self, message: Welcome | Answer) -> None:
        if not self._messages:
            asyncio.get_running_loop().call_soon(self._flush)
        self._messages.append(encode(message))

    def _flush(self) -> None:
        if not self._writer.is_closing():
            self._writer.write(b"".join(self._messages))
        self._messages.clear()


def _close_when_unused(pool: SlotPool) -> None:
    """Unmap a departed front-end's slots once no queued or running batch still holds a view of them."""
    if not pool.close():
        asyncio.get_running_loop().call_later(0.5, _close_when_unused, pool)
