"""Every error the serving side refuses or fails a request with, and everything a caller needs to say it.

Each kind is one class below, and the class is the whole definition: its ``code`` (``error.code`` in the
API), HTTP ``status``, WebSocket ``close_code``, ``reason`` (the ``voxguard_rejected`` label, the code
unless set), ``retry_after_s`` (the ``Retry-After`` of the answer, None when the client should not simply
retry), its fields, and three texts: ``summary`` (``str(error)``, for logs), ``explanation`` (``detail``,
the sentence the client reads; the summary when not set) and ``example_args`` (the constructor arguments of
``example()``, what ``/openapi.json`` shows). The texts are ``str.format`` templates over the error
(``{self.model!r}``; ``{self}`` is the summary). A kind is a dataclass of its annotated fields, which are
its constructor's arguments, and pickles as the call that makes it again: the engine process sends the
exception to the front-end as it is (``voxguard.serving.channel``).

The HTTP error handler (``api.errors``), the OpenAPI examples (``api.openapi``), the live stream's close
codes (``api.stream``) and the process channel read these attributes; none lists the kinds.

To add a serving error, add a class here: subclass :class:`ServingError`, set ``code``, ``status`` and
``close_code`` (and ``retry_after_s`` when the client should come back), declare its fields, and write its
``summary``, ``explanation`` if the client needs more than that, and ``example_args``. Subclassing registers
it in :data:`KINDS`, and ``tests/test_serving_errors.py`` then walks it through HTTP, the WebSocket and the
process channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, dataclass_transform

from ..model.locate import REGISTRY

# WebSocket close codes (RFC 6455 and the IANA registry).
POLICY = 1008  # the request cannot be served as it is
INTERNAL = 1011  # the server failed
TRY_LATER = 1013  # the server cannot take it now

# Every kind by its code, in the order defined below (filled in as each class is created).
KINDS: dict[str, type[ServingError]] = {}


@dataclass_transform(eq_default=False)
class ServingError(Exception):
    """A refusal or failure on the serving side. Subclasses are the kinds; see the module docstring."""

    code: ClassVar[str]
    status: ClassVar[int]
    close_code: ClassVar[int]
    reason: ClassVar[str]
    summary: ClassVar[str]
    explanation: ClassVar[str | None] = None
    example_args: ClassVar[tuple[Any, ...]] = ()
    retry_after_s: int | None = None
    error_id: str | None = None  # set by errors the server logs: it ties the answer to the log line

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code in KINDS:
            raise TypeError(f"{cls.__name__} reuses the code {cls.code!r} of {KINDS[cls.code].__name__}")
        cls.reason = cls.__dict__.get("reason", cls.code)
        dataclass(eq=False)(cls)
        KINDS[cls.code] = cls

    def __str__(self) -> str:
        return self.summary.format(self=self)

    @property
    def detail(self) -> str:
        """What the client reads: what happened, and what to do about it."""
        return str(self) if self.explanation is None else self.explanation.format(self=self)

    @classmethod
    def example(cls) -> ServingError:
        """An instance as a real server would raise it, for the API documentation and the tests."""
        return cls(*cls.example_args)

    def _values(self) -> tuple[Any, ...]:
        """The constructor's arguments that make this error again."""
        return tuple(getattr(self, field.name) for field in fields(self))  # type: ignore[arg-type]

    def __reduce__(self) -> tuple[type[ServingError], tuple[Any, ...]]:
        return type(self), self._values()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ServingError)
            and type(self) is type(other)
            and self._values() == other._values()
        )

    __hash__ = Exception.__hash__


def _whole_seconds(seconds: float) -> int:
    """A ``Retry-After``: whole seconds, at least one."""
    return max(1, math.ceil(seconds))


class QueueFull(ServingError):
    """The model's queue cannot take this request's windows now; retry once the windows ahead are scored."""

    code, status, close_code = "queue_full", 503, TRY_LATER
    summary = "the queue for model {self.model!r} is full"
    explanation = "The server is at capacity ({self}). Retry after {self.retry_after_s} s."
    example_args = ("aasist", 1)

    model: str
    retry_after_s: int

    @classmethod
    def behind(cls, model: str, waiting: int, batch_s: float, max_batch_size: int) -> QueueFull:
        """The refusal with ``waiting`` windows queued ahead, when a batch of up to ``max_batch_size``
        takes ``batch_s`` (the last one's time): retry once they should be scored. The one rule for the
        hint, whether the batcher is in this process or the engine's (``voxguard.serving.admission``)."""
        return cls(model, _whole_seconds(batch_s * (waiting / max_batch_size + 1)))


class Overloaded(ServingError):
    """The work queued ahead would keep this request's windows past its deadline; retry when that work
    should be done. Refused up front instead of timing out later."""

    code, status, close_code = "overloaded", 503, TRY_LATER
    summary = (
        "about {self.backlog_s:.0f} s of work is queued ahead and this audio needs about "
        "{self.needed_s:.0f} s more, which would pass its deadline"
    )
    explanation = "The server is busy: {self}. Retry after {self.retry_after_s} s."
    example_args = (42.0, 3.0)

    backlog_s: float
    needed_s: float

    def __post_init__(self) -> None:
        self.retry_after_s = _whole_seconds(self.backlog_s)


class ShuttingDown(ServingError):
    """The server is draining: queued work finishes, new work is refused."""

    code, status, close_code = "shutting_down", 503, TRY_LATER
    retry_after_s = 1
    summary = "the server is shutting down"
    explanation = "The server is shutting down; retry on another replica."


class EngineUnavailable(ServingError):
    """The engine scoring this front-end's windows is down or restarting (``voxguard.serving.remote``)."""

    code, status, close_code = "engine_unavailable", 503, TRY_LATER
    retry_after_s = 1
    summary = "{self.why}"
    explanation = "The scoring engine is restarting ({self}). Retry after {self.retry_after_s} s."
    example_args = ("the engine process is restarting; retry",)

    why: str


class DeadlineExceeded(ServingError):
    """The window was not scored before the request's deadline."""

    code, status, close_code = "deadline_exceeded", 504, INTERNAL
    summary = "{self.why}"
    explanation = "{self}. Retry later or send shorter audio."
    example_args = ("the request's deadline passed before its audio was scored",)

    why: str


class TooManyWindows(ServingError):
    """One request has more windows than the whole queue holds; it could never be admitted."""

    code, status, close_code = "audio_too_long", 413, POLICY
    reason = "too_long"
    summary = "the audio needs {self.windows} windows but the queue holds {self.queue_size}"
    explanation = "The audio is too long for this server: {self}. Send shorter audio."
    example_args = (1100, 1024)

    windows: int
    queue_size: int


class UnknownModel(ServingError):
    """The request names a model this server has not loaded."""

    code, status, close_code = "unknown_model", 400, POLICY
    example_args = ("aasist-l", ["aasist"])

    model: str
    known: list[str]

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


class InferenceFailed(ServingError):
    """The forward raised for this window; ``error_id`` ties the response to the log line."""

    code, status, close_code = "inference_failed", 500, INTERNAL
    summary = "inference failed (error id {self.error_id})"
    explanation = "The model failed on this audio (error id {self.error_id})."
    example_args = ("3f2a9c01d4e5",)

    error_id: str
