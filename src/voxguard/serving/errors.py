"""Every error the serving side refuses or fails a request with, and everything a caller needs to say it.

Each kind is one class below, and the class is the whole definition: its ``code`` (``error.code`` in the
API), HTTP ``status``, WebSocket ``close_code``, ``reason`` (the ``voxguard_rejected`` label, the code
unless set), ``retry_after_s`` (the ``Retry-After`` of the answer, None when the client should not simply
retry), ``detail`` (the sentence the client reads) and ``example()`` (what ``/openapi.json`` shows). Its
constructor arguments are its fields and go to ``Exception.__init__`` unchanged, so an error pickles as
itself: the engine process sends the exception to the front-end as it is (``voxguard.serving.channel``).

The HTTP error handler (``api.errors``), the OpenAPI examples (``api.openapi``), the live stream's close
codes (``api.stream``) and the process channel read these attributes; none lists the kinds.

To add a serving error, add a class here: subclass :class:`ServingError`, set ``code``, ``status`` and
``close_code`` (and ``retry_after_s`` when the client should come back), pass every constructor argument to
``super().__init__``, and write ``__str__`` (the short form, for logs), ``detail`` if the client needs more
than that, and ``example``. Subclassing registers it in :data:`KINDS`, and ``tests/test_serving_errors.py``
then walks it through HTTP, the WebSocket and the process channel.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..model.locate import REGISTRY

# WebSocket close codes (RFC 6455 and the IANA registry).
POLICY = 1008  # the request cannot be served as it is
INTERNAL = 1011  # the server failed
TRY_LATER = 1013  # the server cannot take it now

# Every kind by its code, in the order defined below (filled in as each class is created).
KINDS: dict[str, type[ServingError]] = {}


class ServingError(Exception):
    """A refusal or failure on the serving side. Subclasses are the kinds; see the module docstring."""

    code: ClassVar[str]
    status: ClassVar[int]
    close_code: ClassVar[int]
    reason: ClassVar[str]
    retry_after_s: int | None = None
    error_id: str | None = None  # set by errors the server logs: it ties the answer to the log line

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code in KINDS:
            raise TypeError(f"{cls.__name__} reuses the code {cls.code!r} of {KINDS[cls.code].__name__}")
        cls.reason = cls.__dict__.get("reason", cls.code)
        KINDS[cls.code] = cls

    @property
    def detail(self) -> str:
        """What the client reads: what happened, and what to do about it."""
        return str(self)

    @classmethod
    def example(cls) -> ServingError:
        """An instance as a real server would raise it, for the API documentation and the tests."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.args == other.args  # type: ignore[union-attr]

    __hash__ = Exception.__hash__


def _whole_seconds(seconds: float) -> int:
    """A ``Retry-After``: whole seconds, at least one."""
    return max(1, math.ceil(seconds))


class QueueFull(ServingError):
    """The model's queue cannot take this request's windows now; retry once the windows ahead are scored."""

    code, status, close_code = "queue_full", 503, TRY_LATER

    def __init__(self, model: str, retry_after_s: int) -> None:
        super().__init__(model, retry_after_s)
        self.model = model
        self.retry_after_s = retry_after_s

    @classmethod
    def behind(cls, model: str, waiting: int, batch_s: float, max_batch_size: int) -> QueueFull:
        """The refusal with ``waiting`` windows queued ahead, when a batch of up to ``max_batch_size``
        takes ``batch_s`` (the last one's time): retry once they should be scored. The one rule for the
        hint, whether the batcher is in this process or the engine's (``voxguard.serving.remote``)."""
        return cls(model, _whole_seconds(batch_s * (waiting / max_batch_size + 1)))

    def __str__(self) -> str:
        return f"the queue for model {self.model!r} is full"

    @property
    def detail(self) -> str:
        return f"The server is at capacity ({self}). Retry after {self.retry_after_s} s."

    @classmethod
    def example(cls) -> QueueFull:
        return cls("aasist", 1)


class Overloaded(ServingError):
    """The work queued ahead would keep this request's windows past its deadline; retry when that work
    should be done. Refused up front instead of timing out later."""

    code, status, close_code = "overloaded", 503, TRY_LATER

    def __init__(self, backlog_s: float, needed_s: float) -> None:
        super().__init__(backlog_s, needed_s)
        self.backlog_s = backlog_s
        self.needed_s = needed_s
        self.retry_after_s = _whole_seconds(backlog_s)

    def __str__(self) -> str:
        return (
            f"about {self.backlog_s:.0f} s of work is queued ahead and this audio needs about "
            f"{self.needed_s:.0f} s more, which would pass its deadline"
        )

    @property
    def detail(self) -> str:
        return f"The server is busy: {self}. Retry after {self.retry_after_s} s."

    @classmethod
    def example(cls) -> Overloaded:
        return cls(42.0, 3.0)


class ShuttingDown(ServingError):
    """The server is draining: queued work finishes, new work is refused."""

    code, status, close_code = "shutting_down", 503, TRY_LATER
    retry_after_s = 1

    def __str__(self) -> str:
        return "the server is shutting down"

    @property
    def detail(self) -> str:
        return "The server is shutting down; retry on another replica."

    @classmethod
    def example(cls) -> ShuttingDown:
        return cls()


class EngineUnavailable(ServingError):
    """The engine scoring this front-end's windows is down or restarting (``voxguard.serving.remote``)."""

    code, status, close_code = "engine_unavailable", 503, TRY_LATER
    retry_after_s = 1

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why

    def __str__(self) -> str:
        return self.why

    @property
    def detail(self) -> str:
        return f"The scoring engine is restarting ({self}). Retry after {self.retry_after_s} s."

    @classmethod
    def example(cls) -> EngineUnavailable:
        return cls("the engine process is restarting; retry")


class DeadlineExceeded(ServingError):
    """The window was not scored before the request's deadline."""

    code, status, close_code = "deadline_exceeded", 504, INTERNAL

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why

    def __str__(self) -> str:
        return self.why

    @property
    def detail(self) -> str:
        return f"{self}. Retry later or send shorter audio."

    @classmethod
    def example(cls) -> DeadlineExceeded:
        return cls("the request's deadline passed before its audio was scored")


class TooManyWindows(ServingError):
    """One request has more windows than the whole queue holds; it could never be admitted."""

    code, status, close_code = "audio_too_long", 413, POLICY
    reason = "too_long"

    def __init__(self, windows: int, queue_size: int) -> None:
        super().__init__(windows, queue_size)
        self.windows = windows
        self.queue_size = queue_size

    def __str__(self) -> str:
        return f"the audio needs {self.windows} windows but the queue holds {self.queue_size}"

    @property
    def detail(self) -> str:
        return f"The audio is too long for this server: {self}. Send shorter audio."

    @classmethod
    def example(cls) -> TooManyWindows:
        return cls(1100, 1024)


class UnknownModel(ServingError):
    """The request names a model this server has not loaded."""

    code, status, close_code = "unknown_model", 400, POLICY

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(model, known)
        self.model = model
        self.known = known

    def __str__(self) -> str:
        return f"model {self.model!r} is not loaded; loaded: {', '.join(self.known)}"

    @property
    def detail(self) -> str:
        """How to load a model this server could load but does not, and what to pass otherwise."""
        if self.model in REGISTRY:
            models = ",".join([*self.known, self.model])
            return (
                f"{self}. Start the server with VOXGUARD_MODELS={models} (or `voxguard serve --models "
                f"{models}`) to load it, or pass a loaded model as `model`, or none for the default."
            )
        return f"{self}. Pass one of them as `model`, or none for the default (models voxguard knows: " + (
            ", ".join(REGISTRY) + ")."
        )

    @classmethod
    def example(cls) -> UnknownModel:
        return cls("aasist-l", ["aasist"])


class InferenceFailed(ServingError):
    """The forward raised for this window; ``error_id`` ties the response to the log line."""

    code, status, close_code = "inference_failed", 500, INTERNAL

    def __init__(self, error_id: str) -> None:
        super().__init__(error_id)
        self.error_id = error_id

    def __str__(self) -> str:
        return f"inference failed (error id {self.error_id})"

    @property
    def detail(self) -> str:
        return f"The model failed on this audio (error id {self.error_id})."

    @classmethod
    def example(cls) -> InferenceFailed:
        return cls("3f2a9c01d4e5")
