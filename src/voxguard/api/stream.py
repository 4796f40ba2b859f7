"""``WebSocket /v1/stream``: live verdicts while someone speaks, through the same batcher as uploads.

Protocol (also in docs/streaming.md):
- connect to ``/v1/stream?model=&hop_s=&format=s16|f32`` (API key as ``X-API-Key`` header or
  ``api_key`` query parameter, since browsers cannot set WebSocket headers);
- optionally send first a text message ``{"format": "s16"|"f32", "sample_rate": 16000, "hop_s": 1.0}``;
- send binary messages of mono little-endian PCM (int16 or float32), at most 1 s each, at 16 kHz or at
  the ``sample_rate`` announced first (the server resamples, exactly as it does uploads);
- receive ``{"type": "window", ...}`` for every completed 4.04 s window (every ``hop_s`` seconds);
- send ``{"type": "end"}`` to get the tail window and ``{"type": "done", ...}`` with the verdict.
Errors arrive as ``{"type": "error", "code", "detail"}`` followed by a close with a meaningful code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..audio.errors import MAX_SOURCE_RATE, MIN_SOURCE_RATE, AudioError
from ..audio.options import SAMPLE_RATE
from ..serving.errors import POLICY, TRY_LATER, ServingError
from ..serving.service import LiveSession, SlowConsumer
from .auth import key_matches
from .protocol import StreamDone, StreamError, StreamWindow

logger = logging.getLogger(__name__)

router = APIRouter()

_FORMATS = {"s16": ("<i2", 1 / 32768.0), "f32": ("<f4", 1.0)}
_MAX_MESSAGE_SECONDS = 1.0
# Close codes (RFC 6455 and IANA registry) of the stream's own errors; a serving error carries its own.
_UNSUPPORTED, _TOO_BIG = 1003, 1009


class _StreamError(Exception):
    def __init__(self, close_code: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.close_code, self.code, self.detail = close_code, code, detail


def _authorised(ws: WebSocket) -> bool:
    keys = ws.app.state.http.api_keys
    if not keys:
        return True
    return key_matches(ws.headers.get("x-api-key") or ws.query_params.get("api_key", ""), keys)


def _config(ws: WebSocket, message: dict | None) -> tuple[str, float, int]:
    values = {**ws.query_params, **(message or {})}
    fmt = str(values.get("format", "s16"))
    if fmt not in _FORMATS:
        raise _StreamError(_UNSUPPORTED, "unsupported_format", f"format must be s16 or f32, got {fmt!r}.")
    rate = int(values.get("sample_rate", SAMPLE_RATE))
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise _StreamError(
            _UNSUPPORTED,
            "unsupported_sample_rate",
            f"sample_rate must be {MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz (mono PCM), got {rate} Hz.",
        )
    hop_s = float(values.get("hop_s", ws.app.state.http.stream_hop_s))
    if not 0.1 <= hop_s <= 4.0:
        raise _StreamError(_UNSUPPORTED, "invalid_hop", f"hop_s must be between 0.1 and 4.0, got {hop_s}.")
    return fmt, hop_s, rate


def _samples(data: bytes, fmt: str, rate: int) -> np.ndarray:
    dtype, scale = _FORMATS[fmt]
    width = np.dtype(dtype).itemsize
    if len(data) % width:
        raise _StreamError(
            _UNSUPPORTED, "invalid_frame", f"a {fmt} frame must be a multiple of {width} bytes."
        )
    if len(data) // width > _MAX_MESSAGE_SECONDS * rate:
        raise _StreamError(_TOO_BIG, "frame_too_large", "Send at most 1 s of audio per message.")
    samples = np.frombuffer(data, dtype=dtype).astype(np.float32) * np.float32(scale)
    if not np.isfinite(samples).all():
        raise _StreamError(_UNSUPPORTED, "invalid_samples", "The audio contains NaN or infinite values.")
    return samples


async def _send_results(ws: WebSocket, session: LiveSession) -> None:
    """Each window as it is scored, judged by the session's rule (the model's, as for uploads)."""
    while (scored := await session.next_scored()) is not None:
        for w in scored:
            window = StreamWindow(
                index=w.index,
                start_s=w.start_s,
                end_s=w.end_s,
                score=w.score,
                fake_probability=w.fake_probability,
                prediction=w.prediction,
                silent=w.silent,
                batch_size=w.batch_size,
            )
            await ws.send_text(window.model_dump_json())


async def _receive(ws: WebSocket) -> dict:
    """The next message; a client silent for ``stream_idle_s`` is closed (1008 ``idle_timeout``), so an
    abandoned connection does not hold its session forever."""
    idle_s = ws.app.state.http.stream_idle_s
    try:
        async with asyncio.timeout(idle_s):
            message = await ws.receive()
    except TimeoutError:
        raise _StreamError(
            POLICY,
            "idle_timeout",
            f"Nothing received for {idle_s:g} s. Send audio at least every {idle_s:g} s, and "
            '{"type": "end"} when done.',
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


async def _receive_audio(ws: WebSocket, session: LiveSession, fmt: str, rate: int) -> None:
    """Feed binary frames to the session until ``{"type": "end"}``, then submit the tail window."""
    while True:
        message = await _receive(ws)
        if message.get("bytes") is not None:
            session.feed(_samples(message["bytes"], fmt, rate))
        elif _json(message.get("text")).get("type") == "end":
            session.finish()
            return
        else:
            raise _StreamError(
                _UNSUPPORTED, "invalid_message", 'Text messages after audio must be {"type": "end"}.'
            )


def _json(text: str | None) -> dict:
    try:
        body = json.loads(text or "")
    except json.JSONDecodeError as exc:
        raise _StreamError(_UNSUPPORTED, "invalid_message", "Text messages must be JSON objects.") from exc
    if not isinstance(body, dict):
        raise _StreamError(_UNSUPPORTED, "invalid_message", "Text messages must be JSON objects.")
    return body


async def _open(ws: WebSocket) -> tuple[LiveSession, str, int]:
    """The session, configured by the query string and an optional first JSON text message."""
    message = await _receive(ws)
    config = _json(message["text"]) if message.get("text") is not None else None
    fmt, hop_s, rate = _config(ws, config)
    session = LiveSession(
        ws.app.state.service,
        ws.query_params.get("model"),
        round(hop_s * SAMPLE_RATE),
        ws.app.state.http.stream_max_pending,
        sample_rate=rate,
    )
    if message.get("bytes") is not None:
        session.feed(_samples(message["bytes"], fmt, rate))
    return session, fmt, rate


async def _close_with_error(ws: WebSocket, close_code: int, code: str, detail: str) -> None:
    with contextlib.suppress(Exception):  # the client may already be gone
        await ws.send_text(StreamError(code=code, detail=detail).model_dump_json())
        await ws.close(close_code, reason=code)


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    await ws.accept()
    session: LiveSession | None = None
    tasks: list[asyncio.Task] = []
    try:
        if not _authorised(ws):
            raise _StreamError(
                POLICY, "unauthorized", "A valid API key is required (X-API-Key or ?api_key=)."
            )
        session, fmt, rate = await _open(ws)
        receiver = asyncio.ensure_future(_receive_audio(ws, session, fmt, rate))
        sender = asyncio.ensure_future(_send_results(ws, session))
        tasks = [receiver, sender]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a receiving, scoring or sending error ends the stream here
        await sender  # the receiver saw "end": wait until every window is out
        summary = session.summary()
        verdict = summary.record() if summary else {"prediction": None}
        done_message = StreamDone(windows=session.windows_submitted, speech_s=session.speech_s, **verdict)
        await ws.send_text(done_message.model_dump_json())
        await ws.close(1000)
    except WebSocketDisconnect:
        logger.info("live stream closed by the client")
    except _StreamError as exc:
        await _close_with_error(ws, exc.close_code, exc.code, exc.detail)
    except SlowConsumer as exc:
        await _close_with_error(ws, TRY_LATER, "slow_consumer", str(exc))
    except ServingError as exc:
        await _close_with_error(ws, exc.close_code, exc.code, exc.detail)
    except AudioError as exc:  # audio the stream cannot use: the client's to fix
        await _close_with_error(ws, POLICY, exc.code, exc.detail)
    finally:
        for task in tasks:
            task.cancel()
        if session is not None:
            session.cancel()
