"""Python client for the voxguard HTTP service, for other services to import.

``Client`` (blocking) and ``AsyncClient`` (asyncio) share everything but the I/O. A request is a
generator of steps (:func:`_exchange` and the operations built on it): it yields a request to send or
seconds to wait and returns the parsed result. The two clients only carry the steps out, one with
blocking calls and one with ``await``, so both build the same requests, parse the same answers and
retry alike. Results are the service's own wire models (``voxguard.api.protocol``), validated from
the JSON.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import threading
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import sleep
from typing import IO, Any, Generic, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.client import connect as ws_connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from . import __version__
from .api.protocol import (
    ErrorBody,
    HealthResponse,
    ModelsResponse,
    PredictResponse,
    StreamConfig,
    StreamDone,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamWindow,
)

__all__ = ["AsyncClient", "Audio", "Client", "RetryPolicy", "VoxguardError"]

logger = logging.getLogger(__name__)

Audio = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
"""A path, the encoded audio itself, or a binary file object (anything with ``.read()``)."""

Verify = bool | str | os.PathLike[str] | ssl.SSLContext
_Model = TypeVar("_Model", bound=BaseModel)
_T = TypeVar("_T")
_Http = TypeVar("_Http", httpx.Client, httpx.AsyncClient)


class VoxguardError(Exception):
    """A request that did not produce a result; branch on ``.code`` (the server's stable error code).

    ``status`` is the HTTP status, or 0 when no response arrived (codes ``connection_error``,
    ``timeout``, ``tls_error``, ``transport_error``) or the local file could not be read
    (``unreadable_file``). ``error_id`` is set for server errors (500) and is
    also in the server log; ``retry_after`` is the ``Retry-After`` of a 503, in seconds.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        error_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}" if status else f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.error_id = error_id
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a request again, and after how long.

    Retried: 503 (``queue_full``, ``overloaded``, ``shutting_down``, ``not_ready``: the server asks to
    come back) and
    ``connection_error`` (nothing was answered; scoring the same audio again is harmless). Never
    retried: 4xx (the request itself is wrong), 500 (the same input fails the same way), 504 and
    ``timeout`` (the time budget is already spent), TLS failures (a certificate does not fix itself).
    """

    retries: int = 3
    backoff: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.1

    def delay(self, attempt: int, error: VoxguardError) -> float | None:
        """Seconds to wait before retrying after failed ``attempt`` (0-based), or None to give up.

        ``Retry-After`` wins over the exponential backoff; the jitter only ever adds time, so a
        server's ``Retry-After`` is respected while clients refused together do not return together.
        """
        if attempt >= self.retries or not (error.status == 503 or error.code == "connection_error"):
            return None
        base = error.retry_after if error.retry_after is not None else self.backoff * 2**attempt
        return min(base * (1 + random.uniform(0, self.jitter)), self.max_delay)


@dataclass(frozen=True)
class _Call:
    """One request, kept as data so that every retry re-sends the same bytes."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] | None = None


def _http_options(
    base_url: str, api_key: str | None, timeout: float | httpx.Timeout, verify: Verify
) -> dict[str, Any]:
    headers = {"User-Agent": f"voxguard-client/{__version__}"}
    if api_key:
        headers["X-API-Key"] = api_key
    if isinstance(verify, (str, os.PathLike)):  # httpx wants a context for a CA file
        verify = ssl.create_default_context(cafile=os.fspath(verify))
    return {"base_url": base_url, "headers": headers, "timeout": timeout, "verify": verify}


def _read_audio(audio: Audio, filename: str | None) -> tuple[str, bytes]:
    """The upload's name and bytes, read once so retries can send them again.

    A path that cannot be read is a ``VoxguardError`` (status 0, ``unreadable_file``) like every other
    way a file can fail to get a result, so ``predict_many`` returns it in place of that file's result.
    """
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        try:
            with open(path, "rb") as f:
                return filename or os.path.basename(path), f.read()
        except OSError as exc:
            raise VoxguardError(0, "unreadable_file", f"cannot read {path}: {exc.strerror or exc}") from exc
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return filename or "audio", bytes(audio)
    if hasattr(audio, "read"):
        name = getattr(audio, "name", None)
        return filename or (os.path.basename(name) if isinstance(name, str) else "audio"), audio.read()
    raise TypeError(f"audio must be a path, bytes or a binary file object, not {type(audio).__name__}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: voxguard never sends one; fall back to the backoff
        return None


def _refusal(response: httpx.Response) -> VoxguardError:
    """A response that is not 2xx: its ``{code, detail}`` body as a VoxguardError."""
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:  # not voxguard's JSON (a proxy's page, say): keep what it said
        body = ErrorBody(code=f"http_{response.status_code}", detail=response.text[:500])
    return VoxguardError(
        response.status_code,
        body.code,
        body.detail,
        error_id=body.error_id,
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


def _parse(response: httpx.Response, model: type[_Model]) -> _Model:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise VoxguardError(
            response.status_code, "invalid_response", f"not a {model.__name__}: {exc}"
        ) from exc


def _transport_error(exc: httpx.RequestError) -> VoxguardError:
    """A request that got no response as a status-0 VoxguardError, with ``exc`` as its cause."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        code = "tls_error"
    elif isinstance(exc, httpx.TimeoutException):
        code = "timeout"
    elif isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        code = "connection_error"
    else:
        code = "transport_error"
    error = VoxguardError(0, code, f"{type(exc).__name__}: {str(exc) or 'no detail'} ({exc.request.url})")
    error.__cause__ = exc
    return error


# --- requests as steps, written once for both clients --------------------------------------------------

Outcome = httpx.Response | httpx.RequestError | None
"""What a client sends back into the steps: the response to a ``_Call``, or the transport error it
raised instead; ``None`` after a wait."""
Steps = Generator[_Call | float, Outcome, _T]
"""A request as steps: yields a ``_Call`` to send or seconds to wait, returns the result."""


def _exchange(policy: RetryPolicy, call: _Call, retry: bool = True) -> Steps[httpx.Response]:
    """``call`` until it succeeds or ``policy`` gives up: the 2xx response, or the last error raised."""
    attempt = 0
    while True:
        outcome = yield call
        if not isinstance(outcome, httpx.Response):
            error = _transport_error(outcome)  # type: ignore[arg-type]
        elif outcome.is_success:
            return outcome
        else:
            error = _refusal(outcome)
        wait = policy.delay(attempt, error) if retry else None
        if wait is None:
            raise error
        logger.debug(
            "%s %s failed (%s); retry %d/%d in %.2f s",
            *(call.method, call.path, error, attempt + 1, policy.retries, wait),
        )
        yield wait
        attempt += 1


def _fetch(policy: RetryPolicy, call: _Call, model: type[_Model]) -> Steps[_Model]:
    return _parse((yield from _exchange(policy, call)), model)


def _predict(policy: RetryPolicy, upload: tuple[str, bytes], model: str | None) -> Steps[PredictResponse]:
    call = _Call("POST", "/v1/predict", {"model": model} if model else {}, {"file": upload})
    return (yield from _fetch(policy, call, PredictResponse))


def _ready(policy: RetryPolicy) -> Steps[bool]:
    """Asked once, as a probe: a 503 or an unreachable server means "not ready"; a wrong key or
    certificate is an error."""
    try:
        yield from _exchange(policy, _Call("GET", "/ready"), retry=False)
    except VoxguardError as error:
        if error.status == 503 or error.code == "connection_error":
            return False
        raise
    return True


@dataclass(frozen=True)
class _Done(Generic[_T]):
    value: _T


def _advance(steps: Steps[_T], outcome: Outcome) -> _Call | float | _Done[_T]:
    """The next step, given the outcome of the last; ``_Done`` with the result once there is none."""
    try:
        return steps.send(outcome)
    except StopIteration as done:
        return _Done(done.value)


_HEALTH = _Call("GET", "/health")
_MODELS = _Call("GET", "/v1/models")


class _Base(Generic[_Http]):
    """What both clients hold: the retry policy, an httpx client, and where the stream connects.

    ``verify`` is True (system CAs), False, a CA file (e.g. the service's self-signed ``cert.pem``) or
    an ``ssl.SSLContext``. ``transport`` replaces httpx's network transport (then ``verify`` is unused).
    """

    _http_class: type[_Http]

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        verify: Verify = True,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        options = _http_options(base_url, api_key, timeout, verify)
        self._http = self._http_class(transport=transport, **options)  # type: ignore[arg-type]
        self._ws = (base_url, api_key, verify)


class Client(_Base[httpx.Client]):
    """Blocking client; thread-safe, so one instance can serve a whole process."""

    _http_class = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, steps: Steps[_T]) -> _T:
        """Carry ``steps`` out: send each request, sleep each wait, return what they return."""
        outcome: Outcome = None
        while not isinstance(step := _advance(steps, outcome), _Done):
            outcome = self._send(step) if isinstance(step, _Call) else sleep(step)
        return step.value

    def _send(self, call: _Call) -> httpx.Response | httpx.RequestError:
        try:
            return self._http.request(call.method, call.path, params=call.params, files=call.files)
        except httpx.RequestError as exc:
            return exc

    def predict(
        self, audio: Audio, *, model: str | None = None, filename: str | None = None
    ) -> PredictResponse:
        """Score one recording (a path, bytes or a binary file object) with ``model`` or the default."""
        return self._run(_predict(self.policy, _read_audio(audio, filename), model))

    def predict_many(
        self, paths_or_bytes: Iterable[Audio], *, model: str | None = None, concurrency: int = 4
    ) -> list[PredictResponse | VoxguardError]:
        """Score several recordings, ``concurrency`` at a time; one result or error each, in input order.

        Sending them concurrently lets the server batch them together. A path that cannot be read takes
        its place as a ``VoxguardError`` with code ``unreadable_file`` (status 0); the others still run.
        """

        def one(audio: Audio) -> PredictResponse | VoxguardError:
            try:
                return self.predict(audio, model=model)
            except VoxguardError as error:
                return error

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, paths_or_bytes))

    def health(self) -> HealthResponse:
        """Liveness: the process answers, with its device and loaded models."""
        return self._run(_fetch(self.policy, _HEALTH, HealthResponse))

    def ready(self) -> bool:
        """Whether the service takes work now; asked once, without retries (it is a probe)."""
        return self._run(_ready(self.policy))

    def models(self) -> ModelsResponse:
        """The loaded models, with the sha256 of each checkpoint."""
        return self._run(_fetch(self.policy, _MODELS, ModelsResponse))

    def stream(
        self,
        frames: Iterable[bytes | np.ndarray],
        *,
        sample_rate: int = 16000,
        pcm_format: str = "s16",
        hop_s: float | None = None,
        model: str | None = None,
    ) -> Iterator[StreamWindow | StreamDone]:
        """Stream PCM frames to ``/v1/stream``; yields a ``StreamWindow`` per window, then the ``StreamDone``.

        ``frames`` are mono PCM chunks (bytes, or arrays) of at most 1 s each in ``pcm_format`` (``s16`` or
        ``f32``), sent as fast
        as the iterable yields them: pace a live source in real time. Server errors raise
        ``VoxguardError`` with the server's code. Protocol: docs/streaming.md.
        """
        return _sync_stream(self._ws, _outgoing(frames, sample_rate, pcm_format, hop_s), model)


def _stream_uri(base_url: str, model: str | None) -> str:
    url = httpx.URL(base_url.rstrip("/") + "/v1/stream")
    url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws")
    return str(url.copy_merge_params({"model": model}) if model else url)


def _stream_config(sample_rate: int, fmt: str, hop_s: float | None) -> str:
    config = StreamConfig(sample_rate=sample_rate, format=fmt, hop_s=hop_s)  # type: ignore[arg-type]
    return config.model_dump_json(exclude_none=True)


def _frame_bytes(frame: bytes | np.ndarray, fmt: str) -> bytes:
    if isinstance(frame, np.ndarray):
        return frame.astype("<i2" if fmt == "s16" else "<f4", copy=False).tobytes()
    return bytes(frame)


_STREAM_EVENT: TypeAdapter[StreamWindow | StreamDone | StreamError] = TypeAdapter(StreamEvent)


def _stream_message(text: str | bytes) -> StreamWindow | StreamDone:
    """A server message as its model; an ``error`` message becomes a ``VoxguardError`` (status 0: no
    HTTP status)."""
    message = _STREAM_EVENT.validate_json(text)
    if isinstance(message, StreamError):
        raise VoxguardError(0, message.code, message.detail)
    return message


def _outgoing(
    frames: Iterable[bytes | np.ndarray], sample_rate: int, fmt: str, hop_s: float | None
) -> Iterator[str | bytes]:
    """The messages of a stream: its configuration, the frames, the end."""
    yield _stream_config(sample_rate, fmt, hop_s)
    for frame in frames:
        yield _frame_bytes(frame, fmt)
    yield StreamEnd().model_dump_json()


async def _outgoing_async(
    frames: Iterable[bytes | np.ndarray] | AsyncIterable[bytes | np.ndarray],
    sample_rate: int,
    fmt: str,
    hop_s: float | None,
) -> AsyncIterator[str | bytes]:
    """:func:`_outgoing` for frames that may also come from an async iterable."""
    if not isinstance(frames, AsyncIterable):
        for message in _outgoing(frames, sample_rate, fmt, hop_s):
            yield message
        return
    yield _stream_config(sample_rate, fmt, hop_s)
    async for frame in frames:
        yield _frame_bytes(frame, fmt)
    yield StreamEnd().model_dump_json()


def _ws_options(api_key: str | None, verify: Verify, secure: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"max_size": None}
    if api_key:
        options["additional_headers"] = {"X-API-Key": api_key}
    if secure:
        if isinstance(verify, ssl.SSLContext):
            options["ssl"] = verify
        elif isinstance(verify, (str, os.PathLike)):
            options["ssl"] = ssl.create_default_context(cafile=os.fspath(verify))
        elif verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            options["ssl"] = context
    return options


def _sync_stream(
    ws_target: tuple[str, str | None, Verify], messages: Iterator[str | bytes], model: str | None
) -> Iterator[StreamWindow | StreamDone]:
    base_url, api_key, verify = ws_target
    uri = _stream_uri(base_url, model)
    failure: list[Exception] = []
    with ws_connect(uri, **_ws_options(api_key, verify, uri.startswith("wss"))) as ws:

        def send_all() -> None:
            try:
                for message in messages:
                    ws.send(message)
            except ConnectionClosed:
                pass  # the server may close first (an error message)
            except Exception as exc:  # the caller's frames failed: end the stream, and raise it there
                failure.append(exc)
                ws.close()

        sender = threading.Thread(target=send_all, name="voxguard-stream-send", daemon=True)
        sender.start()
        try:
            for text in ws:
                yield _stream_message(text)
        finally:
            sender.join(timeout=5)
    if failure:
        raise failure[0]


class AsyncClient(_Base[httpx.AsyncClient]):
    """The asyncio twin of ``Client``: same arguments, same results, same errors and retries."""

    _http_class = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, steps: Steps[_T]) -> _T:
        """``Client._run`` with ``await``."""
        outcome: Outcome = None
        while not isinstance(step := _advance(steps, outcome), _Done):
            outcome = await (self._send(step) if isinstance(step, _Call) else asyncio.sleep(step))
        return step.value

    async def _send(self, call: _Call) -> httpx.Response | httpx.RequestError:
        try:
            return await self._http.request(call.method, call.path, params=call.params, files=call.files)
        except httpx.RequestError as exc:
            return exc

    async def predict(
        self, audio: Audio, *, model: str | None = None, filename: str | None = None
    ) -> PredictResponse:
        """Score one recording (a path, bytes or a binary file object) with ``model`` or the default."""
        upload = await asyncio.to_thread(_read_audio, audio, filename)  # file reads stay off the loop
        return await self._run(_predict(self.policy, upload, model))

    async def predict_many(
        self, paths_or_bytes: Iterable[Audio], *, model: str | None = None, concurrency: int = 4
    ) -> list[PredictResponse | VoxguardError]:
        """Score several recordings, at most ``concurrency`` in flight; results (or errors, an unreadable
        path included) in input order."""
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(audio: Audio) -> PredictResponse | VoxguardError:
            async with limit:
                try:
                    return await self.predict(audio, model=model)
                except VoxguardError as error:
                    return error

        return list(await asyncio.gather(*(one(audio) for audio in paths_or_bytes)))

    async def health(self) -> HealthResponse:
        """Liveness: the process answers, with its device and loaded models."""
        return await self._run(_fetch(self.policy, _HEALTH, HealthResponse))

    async def ready(self) -> bool:
        """Whether the service takes work now; asked once, without retries (it is a probe)."""
        return await self._run(_ready(self.policy))

    async def models(self) -> ModelsResponse:
        """The loaded models, with the sha256 of each checkpoint."""
        return await self._run(_fetch(self.policy, _MODELS, ModelsResponse))

    async def stream(
        self,
        frames: Iterable[bytes | np.ndarray] | AsyncIterable[bytes | np.ndarray],
        *,
        sample_rate: int = 16000,
        pcm_format: str = "s16",
        hop_s: float | None = None,
        model: str | None = None,
    ) -> AsyncIterator[StreamWindow | StreamDone]:
        """The asyncio twin of ``Client.stream`` (``frames`` may also be an async iterable)."""
        base_url, api_key, verify = self._ws
        uri = _stream_uri(base_url, model)
        failure: list[Exception] = []
        async with ws_connect_async(uri, **_ws_options(api_key, verify, uri.startswith("wss"))) as ws:

            async def send_all() -> None:
                try:
                    async for message in _outgoing_async(frames, sample_rate, pcm_format, hop_s):
                        await ws.send(message)
                except ConnectionClosed:
                    pass
                except Exception as exc:  # as in the sync client: end the stream, raise it to the caller
                    failure.append(exc)
                    await ws.close()

            sender = asyncio.ensure_future(send_all())
            try:
                async for text in ws:
                    yield _stream_message(text)
            finally:
                sender.cancel()
        if failure:
            raise failure[0]
