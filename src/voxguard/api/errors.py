"""Every failure becomes JSON ``{"code", "detail"}`` with a fitting status; nothing else leaks out."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..audio.errors import ACCEPTED_FORMATS, AudioError
from ..serving.errors import ServingError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status, stable code and a sentence saying what is accepted; server errors
    carry the ``error_id`` that is also in the log."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        error_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.error_id = error_id


_AUDIO_STATUS = {
    "empty_input": 400,
    "undecodable_audio": 415,
    "no_audio_stream": 415,
    "audio_too_short": 422,
    "audio_too_long": 413,
    "invalid_samples": 422,
    "no_speech": 422,
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "upload_too_large"}


def to_api_error(exc: Exception) -> ApiError:
    """Map a domain exception to its HTTP form (also used per file in batch responses)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AudioError):
        return ApiError(_AUDIO_STATUS.get(exc.code, 400), exc.code, exc.detail)
    if isinstance(exc, ServingError):
        retry = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
        return ApiError(exc.status, exc.code, exc.detail, retry, error_id=exc.error_id)
    error_id = uuid.uuid4().hex[:12]
    logger.error("unhandled error (error id %s)", error_id, exc_info=exc)
    return ApiError(500, "internal_error", f"Internal error (error id {error_id}).", error_id=error_id)


def error_response(err: ApiError) -> JSONResponse:
    body: dict[str, str] = {"code": err.code, "detail": err.detail}
    if err.error_id is not None:
        body["error_id"] = err.error_id
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def _http_detail(request: Request, exc: StarletteHTTPException) -> str:
    """Starlette's bare "Not Found" / "Method Not Allowed", said with the method, path and what works."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"{where} is not allowed; {request.url.path} accepts {allowed or 'other methods'}. See /docs."
    if exc.status_code == 404:
        return f"There is no {where}. The API is described at /docs."
    return str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    async def domain(_: Request, exc: Exception) -> JSONResponse:
        return error_response(to_api_error(exc))

    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        return error_response(ApiError(422, "invalid_request", f"The request is invalid: {problems}."))

    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = _http_detail(request, exc)
        return error_response(ApiError(exc.status_code, code, detail, getattr(exc, "headers", None)))

    for kind in (ApiError, AudioError, ServingError):
        app.add_exception_handler(kind, domain)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, domain)


def how_to_send(field: str = "file") -> str:
    """How to upload to a route whose form field is ``field``: ``file`` (one) or ``files`` (several)."""
    if field == "files":
        return (
            "Send the audio as multipart/form-data with one `files` part per file. "
            f"Accepted audio: {ACCEPTED_FORMATS}."
        )
    return (
        "Send the audio as multipart/form-data (field `file`) or as a raw body with an audio/* or "
        f"application/octet-stream content type. Accepted audio: {ACCEPTED_FORMATS}."
    )
