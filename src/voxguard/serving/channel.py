"""The control channel between front-ends and the engine process: small messages on a Unix socket.

A message is one of the frozen dataclasses below, pickled as it is, after its length (4 bytes). Windows
never travel here; they are in shared slots (``voxguard.serving.shm``) and a submission names them. The
socket lives in the server's private folder, so only its own processes can speak on it. (Not to be
confused with the HTTP API's wire format, ``voxguard.api.protocol``.)

Front-end to engine: :class:`Hello` once, then :class:`Submit` and :class:`Cancel`.
Engine to front-end: :class:`Welcome` once, then one :data:`Answer` per submission: :class:`Scored`,
:class:`Refused`, or :class:`Released` after a cancel. Exactly one answers each submission, a cancelled
one included: only then may the front-end reuse its slots.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass

from .batching import ScoredWindows
from .errors import ServingError

_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Hello:
    """A front-end's first message: where its window slots are, so the engine can map them."""

    frontend: int
    pool_path: str
    slots: int
    window: int


@dataclass(frozen=True)
class Welcome:
    """The engine has the front-end's slots mapped: submissions may follow."""


@dataclass(frozen=True)
class Submit:
    """Score the windows in ``slots`` with ``model`` by ``deadline`` (``time.monotonic()``, which is
    system-wide)."""

    request: int
    model: str
    slots: list[int]
    deadline: float


@dataclass(frozen=True)
class Cancel:
    """The front-end no longer waits for ``request``: drop what is not computed yet."""

    request: int


@dataclass(frozen=True)
class Scored:
    """``request``'s windows scored, with the batches they ran in and the time they took."""

    request: int
    scored: ScoredWindows


@dataclass(frozen=True)
class Refused:
    """The request failed or was refused with ``error`` (a ``serving.errors`` error, pickled as it is)."""

    request: int
    error: ServingError


@dataclass(frozen=True)
class Released:
    """After a :class:`Cancel`: nothing more was computed or sent for ``request``."""

    request: int


Answer = Scored | Refused | Released
Message = Hello | Welcome | Submit | Cancel | Answer


def encode(message: Message) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


async def receive(reader: asyncio.StreamReader) -> Message:
    """The next message; ``asyncio.IncompleteReadError`` when the other side has gone."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))
