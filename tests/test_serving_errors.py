"""Every serving error (``voxguard.serving.errors.KINDS``) through every way out of the server: the HTTP error
handler, the live stream's close, and the channel from the engine process. Parametrized over the table, so
a new kind is covered the moment it is defined."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from servers import free_port
from voxguard.api.errors import install_error_handlers
from voxguard.api.openapi import error_responses
from voxguard.api.stream import router as stream_router
from voxguard.serving.channel import Message, Refused, encode, receive
from voxguard.serving.errors import KINDS, ServingError
from voxguard.settings import Settings

ERRORS = [kind.example() for kind in KINDS.values()]
IDS = list(KINDS)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FastAPI]]:
    """A real server with the real error handlers and live stream, whose every request meets the error
    in ``app.state.error``: an HTTP route raises it, and the stream's session as it resolves the model."""

    def refuse(*_: object) -> None:
        raise app.state.error

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(stream_router)
    app.add_api_route("/refuse", lambda: refuse())
    app.state.http = Settings().http
    app.state.service = SimpleNamespace(resolve_model=refuse)
    port = free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    while not uvicorn_server.started:
        assert thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    yield f"127.0.0.1:{port}", app
    uvicorn_server.should_exit = True
    thread.join(timeout=30)


def test_the_table_is_complete():
    assert len(KINDS) >= 8
    for code, kind in KINDS.items():
        assert kind.code == code and kind.example().code == code and issubclass(kind, ServingError)
    with pytest.raises(TypeError, match="reuses the code"):
        type("Twin", (ServingError,), {"code": "queue_full", "status": 503, "close_code": 1013})


@pytest.mark.parametrize("error", ERRORS, ids=IDS)
def test_over_http(server: tuple[str, FastAPI], error: ServingError):
    address, app = server
    app.state.error = error
    answer = httpx.get(f"http://{address}/refuse")
    assert answer.status_code == error.status
    body = answer.json()
    assert body["code"] == error.code and body["detail"] == error.detail
    assert body.get("error_id") == error.error_id
    if error.retry_after_s is None:
        assert "retry-after" not in answer.headers
    else:
        assert answer.headers["retry-after"] == str(error.retry_after_s)
        assert error.status == 503  # a hint to come back means "not now", nothing else


@pytest.mark.parametrize("error", ERRORS, ids=IDS)
def test_over_the_live_stream(server: tuple[str, FastAPI], error: ServingError):
    address, app = server
    app.state.error = error
    with connect(f"ws://{address}/v1/stream") as ws:
        ws.send(json.dumps({"format": "s16"}))
        message = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert message == {"type": "error", "code": error.code, "detail": error.detail}
    assert ws.close_code == error.close_code in (1008, 1011, 1013)
    assert ws.close_reason == error.code


@pytest.mark.parametrize("error", ERRORS, ids=IDS)
def test_over_the_process_channel(error: ServingError):
    assert pickle.loads(pickle.dumps(error)) == error

    async def carried() -> Message:
        reader = asyncio.StreamReader()
        reader.feed_data(encode(Refused(7, error)))
        return await receive(reader)

    message = asyncio.run(carried())
    assert isinstance(message, Refused) and message.request == 7
    got = message.error
    assert got == error and got is not error and type(got) is type(error)
    for said in (
        str,
        vars,
        lambda e: (e.detail, e.code, e.status, e.close_code, e.retry_after_s, e.error_id),
    ):
        assert said(got) == said(error)


def test_the_api_documents_every_code_under_its_status():
    for error in ERRORS:
        examples = error_responses(error.status)[error.status]["content"]["application/json"]["examples"]
        assert error.code in examples
