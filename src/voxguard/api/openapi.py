"""What ``/openapi.json`` (and so Swagger UI and ReDoc) says beyond the route signatures: the upload
bodies, which the routes parse themselves (see ``uploads``), and an example of every error code by status
(those of the serving errors from ``serving.errors``).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from ..serving.errors import KINDS
from .protocol import ErrorBody

_ACCEPTED = (
    "Accepted: WAV, FLAC, MP3, OGG/Vorbis, OGG/Opus, M4A/AAC, WebM/Opus audio, 0.25 s to 600 s long, "
    "sampled at 4000-192000 Hz."
)

# An example detail for every code a route may answer besides the serving errors, by status: /docs shows
# each status with the codes it can carry, not one code for all. Details of a real server name the actual
# values.
_EXAMPLES: dict[int, tuple[str, dict[str, str]]] = {
    400: (
        "The request is wrong: empty or malformed upload, unknown or conflicting model, unknown parameter",
        {
            "empty_input": "The upload is empty (0 bytes). " + _ACCEPTED,
            "invalid_multipart": "The multipart body is malformed (unexpected end of message).",
            "too_many_files": "The form has 2 `file` parts; /v1/predict scores one. Send several files "
            "to /v1/predict/batch as `files`.",
            "conflicting_model": "The query says model 'aasist' but the form says 'aasist-l'. Send one.",
            "unknown_parameter": "Unknown query parameter `threshold`: /v1/predict accepts `model`.",
            "unknown_field": "Unknown form field `threshold`: /v1/predict accepts `file` and `model`.",
        },
    ),
    401: (
        "Missing or wrong API key (only when the server has VOXGUARD_API_KEYS)",
        {
            "unauthorized": "A valid API key is required: send it as `X-API-Key: <key>` or "
            "`Authorization: Bearer <key>`."
        },
    ),
    408: (
        "The upload did not arrive before the request deadline",
        {"request_timeout": "The upload did not arrive within 30 s. Send the whole body."},
    ),
    413: (
        "The upload or the audio is too large",
        {
            "upload_too_large": "The upload is larger than the limit of 100 MB. Send a shorter or more "
            "compressed file.",
            "audio_too_long": "The audio is longer than 600 s. " + _ACCEPTED,
            "too_many_parts": "The form has more than 64 parts.",
        },
    ),
    415: (
        "Not an accepted audio format or content type",
        {
            "undecodable_audio": "The file is not in a recognised audio format. " + _ACCEPTED,
            "no_audio_stream": "The file contains no audio stream. " + _ACCEPTED,
            "unsupported_media_type": "Content type 'text/plain' is not accepted. Send the audio as "
            "multipart/form-data (field `file`) or as a raw audio/* body.",
        },
    ),
    422: (
        "Audio that cannot be judged, or a form without the file",
        {
            "audio_too_short": "The audio is 0.100 s long. " + _ACCEPTED,
            "invalid_samples": "The audio contains NaN or infinite sample values. " + _ACCEPTED,
            "no_speech": "Every part of the audio is below -60 dBFS RMS, so there is no speech to analyse. "
            "Accepted: audio with audible speech.",
            "missing_file_field": "The form has no `file` field (fields found: audio). Upload the audio "
            "as `file`.",
            "invalid_request": "The request is invalid: query.model: ...",
        },
    ),
    500: ("The model failed on this audio; the error id is also in the server log", {}),
    503: ("The server is full, starting or shutting down; retry after `Retry-After` seconds", {}),
    504: ("Not scored before the request deadline", {}),
}


def _error_examples() -> dict[int, tuple[str, dict[str, dict[str, str]]]]:
    """Per status its description and the body of each code's example: the serving errors' own, then
    the others (an audio error's example wins over a serving error's of the same code)."""
    out = {status: (description, {}) for status, (description, _) in _EXAMPLES.items()}
    for kind in KINDS.values():
        error = kind.example()
        body = {"code": error.code, "detail": error.detail}
        if error.error_id is not None:
            body["error_id"] = error.error_id
        out.setdefault(error.status, (HTTPStatus(error.status).phrase, {}))[1][error.code] = body
    for status, (_, codes) in _EXAMPLES.items():
        out[status][1].update({code: {"code": code, "detail": detail} for code, detail in codes.items()})
    return dict(sorted(out.items()))


ERROR_EXAMPLES = _error_examples()


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: per status its description and one example per error code."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, codes = ERROR_EXAMPLES[status]
        examples = {code: {"summary": code, "value": body} for code, body in codes.items()}
        out[status] = {
            "model": ErrorBody,
            "description": description,
            "content": {"application/json": {"examples": examples}},
        }
    return out


MODEL_PARAMETER: dict[str, Any] = {
    "name": "model",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "default": ""},
    "description": "a loaded model (GET /v1/models); empty: the server's default",
}


def upload_body(many: bool, model_query: bool = False) -> dict[str, Any]:
    """The request body of an upload route: a multipart form or, for one file, the raw audio; with
    ``model_query``, the ``model`` query parameter (``routes.query_model`` reads it)."""
    field = "files" if many else "file"
    file_schema: dict[str, Any] = {"type": "string", "format": "binary"}
    properties: dict[str, Any] = {
        field: {"type": "array", "items": file_schema} if many else file_schema,
        # An empty example: Swagger UI would otherwise pre-fill "string", a model no server has.
        "model": {
            "type": "string",
            "default": "",
            "example": "",
            "description": "a loaded model (GET /v1/models); empty: the server's default",
        },
    }
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": [field]}}
    }
    if not many:
        content["audio/*"] = {"schema": {"type": "string", "format": "binary"}}
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": content}}
    if model_query:
        extra["parameters"] = [MODEL_PARAMETER]
    return extra


# The two ways to send a key (auth.supplied_key); either one satisfies a route.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "One of the server's VOXGUARD_API_KEYS.",
    },
    "Bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`, the same keys as `X-API-Key`.",
    },
}


def document_keys(app: FastAPI, guarded: frozenset[str]) -> None:
    """Make the schema say what this server enforces: the key schemes (so Swagger UI has an Authorize
    button) on exactly the ``guarded`` paths, the ones ``auth.ApiKeyGuard`` checks before routing (so
    no dependency tells FastAPI); with no keys, no route asks for one."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        if guarded:
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            required = [{name: []} for name in SECURITY_SCHEMES]
            for path, item in schema["paths"].items():
                if path in guarded:
                    for operation in item.values():
                        operation["security"] = required
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
