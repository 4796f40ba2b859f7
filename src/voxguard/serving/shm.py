"""Memory shared between the engine process and the front-ends: window slots and a status board.

Both are files in one private folder (on ``/dev/shm`` where it exists, so they never touch a disk)
mapped by every process that uses them. A front-end owns its :class:`SlotPool`: it writes a request's
windows into free slots and sends only the slot numbers to the engine, which reads them in place;
the slots are free again once the engine has answered for that request. The :class:`StatusBoard` is
written by one process per field and read by all: the engine's state (ready, load, measured device
time), and the front-ends' liveness, so any front-end's ``/ready`` sees a crashed process. The
catalogue (the engine's models and batch limit) is written once the engine is warm, so a front-end
can build its app before it links to the engine.
"""

from __future__ import annotations

import mmap
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ..inference import ModelInfo

T = TypeVar("T", bool, float)


def make_folder() -> Path:
    """A private folder for one server's shared files, in memory where the system allows."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="voxguard-", dir=base))


@dataclass(frozen=True)
class SharedFolder:
    """The private folder where the split wiring's processes meet (this module's files): each
    front-end's window slots, the status board, the engine's catalogue and its control socket. Small
    and picklable, so it is handed to every process the supervisor starts."""

    path: Path
    frontends: int
    models: int

    @classmethod
    def create(cls, frontends: int, models: int) -> tuple[SharedFolder, StatusBoard]:
        """A new folder and its status board (the supervisor's part; it removes the folder at the end)."""
        shared = cls(make_folder(), frontends, models)
        return shared, shared.open_board(create=True)

    def open_board(self, create: bool = False) -> StatusBoard:
        return StatusBoard(self.path / "status", self.frontends, self.models, create=create)

    @property
    def socket(self) -> Path:
        """The engine's control socket (``channel``)."""
        return self.path / "engine.sock"


def _map(path: Path, size: int, create: bool) -> mmap.mmap:
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


class SlotPool:
    """``slots`` windows of ``window`` float32 samples in one shared file."""

    def __init__(self, path: Path, slots: int, window: int, create: bool) -> None:
        self.path = path
        self.slots = slots
        self.window = window
        self._map = _map(path, slots * window * 4, create)
        self.array = np.ndarray((slots, window), dtype=np.float32, buffer=self._map)
        self._free = list(range(slots - 1, -1, -1)) if create else []

    @property
    def free(self) -> int:
        return len(self._free)

    def put(self, windows: np.ndarray) -> list[int] | None:
        """Copy ``windows`` into free slots and return their numbers, or None when too few are free."""
        n = len(windows)
        if n > len(self._free):
            return None
        taken = [self._free.pop() for _ in range(n)]
        self.array[taken] = windows
        return taken

    def release(self, taken: list[int]) -> None:
        self._free.extend(taken)

    def views(self, taken: list[int]) -> list[np.ndarray]:
        """The windows in ``taken``, in place (no copy: the batcher stacks them in the device thread)."""
        return [self.array[i] for i in taken]

    def close(self) -> bool:
        """Unmap; False while views of it are still alive (try again later)."""
        self.array = None  # type: ignore[assignment]
        try:
            self._map.close()
        except BufferError:
            self.array = np.ndarray((self.slots, self.window), dtype=np.float32, buffer=self._map)
            return False
        return True


# The status board: the engine's fields, then one flag per front-end (1 = linked, 0 = down), then the queue
# depth of each model. Float64 throughout; a torn read of one field costs at most one stale value.
_HEARTBEAT, _READY, _ACCEPTING, _WINDOW_S, _BATCH_S = range(5)
_ENGINE_FIELDS = 5


class _EngineField(Generic[T]):
    """One of the engine's fields on the board, read as ``kind`` (``bool`` or ``float``)."""

    def __init__(self, index: int, kind: Callable[[float], T]) -> None:
        self.index = index
        self.kind = kind

    def __get__(self, board: StatusBoard, owner: type | None = None) -> T:
        return self.kind(board._values[self.index])


class StatusBoard:
    def __init__(self, path: Path, frontends: int, models: int, create: bool) -> None:
        self.frontends = frontends
        size = (_ENGINE_FIELDS + frontends + models) * 8
        self._map = _map(path, size, create)
        self._values = np.ndarray((size // 8,), dtype=np.float64, buffer=self._map)
        self._depths = self._values[_ENGINE_FIELDS + frontends :]

    # Written by the engine
    def engine_beat(
        self, now: float, ready: bool, accepting: bool, window_s: float, batch_s: float, depths: list[int]
    ) -> None:
        v = self._values
        v[_READY], v[_ACCEPTING], v[_WINDOW_S], v[_BATCH_S] = ready, accepting, window_s, batch_s
        self._depths[: len(depths)] = depths
        v[_HEARTBEAT] = now

    # Written by a front-end once it is linked to the engine, and by the supervisor when it dies
    def frontend_alive(self, index: int, alive: bool) -> None:
        self._values[_ENGINE_FIELDS + index] = 1.0 if alive else 0.0

    # Read by the front-ends: when the engine last wrote, whether it is ready and admitting, its device
    # time per window, and how long its last batch took (a queue-full refusal's Retry-After grows with it)
    engine_heartbeat = _EngineField(_HEARTBEAT, float)
    engine_ready = _EngineField(_READY, bool)
    engine_accepting = _EngineField(_ACCEPTING, bool)
    window_s = _EngineField(_WINDOW_S, float)
    batch_s = _EngineField(_BATCH_S, float)

    def depth(self, index: int) -> int:
        return int(self._depths[index])

    def frontends_down(self) -> list[int]:
        alive = self._values[_ENGINE_FIELDS : _ENGINE_FIELDS + self.frontends]
        return [i for i, beat in enumerate(alive) if not beat]


def write_catalogue(folder: Path, catalogue: tuple[dict[str, ModelInfo], int]) -> None:
    """What the front-ends need before they can build their app: the models and the batch limit."""
    partial = folder / ".catalogue"
    partial.write_bytes(pickle.dumps(catalogue))
    partial.replace(folder / "catalogue")


def read_catalogue(folder: Path) -> tuple[dict[str, ModelInfo], int]:
    return pickle.loads((folder / "catalogue").read_bytes())
