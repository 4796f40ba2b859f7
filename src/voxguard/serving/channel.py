"""The control channel between front-ends and the engine process: small messages on a Unix socket.

A message is a tuple, pickled, after its length (4 bytes). Windows never travel here; they are in
shared slots (``voxguard.serving.shm``) and a submission names them. The socket lives in the server's
private folder, so only its own processes can speak on it. (Not to be confused with the HTTP API's wire
format, ``voxguard.api.protocol``.)

Front-end to engine:
    ("hello", frontend_index, pool_path, slots, window)
    ("submit", request_id, model, slot_numbers, deadline)      deadline: time.monotonic(), system-wide
    ("cancel", request_id)
Engine to front-end:
    ("welcome",)                                                the slots are mapped
    ("scored", request_id, scores, batch_sizes, queue_ms, inference_ms)
    ("refused", request_id, error)                              a ``serving.errors`` error, pickled as it is
    ("released", request_id)                                    after a cancel: nothing computed or sent

Exactly one "scored" or "refused" answers each submission, a cancelled one included: only then may the
front-end reuse its slots.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

_LENGTH = struct.Struct("!I")


def encode(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message; ``asyncio.IncompleteReadError`` when the other side has gone."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))
