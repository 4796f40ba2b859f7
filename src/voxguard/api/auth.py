"""API keys: ``X-API-Key`` or ``Authorization: Bearer``, checked before routing, in constant time.

A pure ASGI middleware rather than a FastAPI dependency: security-scheme dependencies are resolved on
every request, and on a fast device that was about a sixth of voxguard's host time per request
(docs/benchmarks.md). The schemes are still declared in OpenAPI (``openapi.document_keys``), so Swagger
UI's Authorize button works where keys are enforced.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError, error_response

UNAUTHORIZED = ApiError(
    401,
    "unauthorized",
    "A valid API key is required: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`.",
    {"WWW-Authenticate": "Bearer"},
)


def key_matches(supplied: str, keys: Iterable[str]) -> bool:
    """Compare against every key in constant time, with no early exit, so timing reveals nothing."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied.encode(), key.encode())
    return matched


def supplied_key(headers: dict[bytes, bytes]) -> str:
    """The key a request carries: ``X-API-Key``, else the token of ``Authorization: Bearer``."""
    key = headers.get(b"x-api-key", b"").decode("latin-1")
    if key:
        return key
    auth = headers.get(b"authorization", b"").decode("latin-1")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


class ApiKeyGuard:
    """Answers 401 to an HTTP request for one of ``paths`` that carries none of ``keys``."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], paths: frozenset[str]) -> None:
        self.app = app
        self.keys = list(keys)
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["path"] in self.paths
        if guarded and not key_matches(supplied_key(dict(scope["headers"])), self.keys):
            await error_response(UNAUTHORIZED)(scope, receive, send)
            return
        await self.app(scope, receive, send)
