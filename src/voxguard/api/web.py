"""The browser page: ``GET /`` and its static assets under ``/web/``, served from the package.

The page itself needs no key (it is static); its calls to the API carry ``X-API-Key``. The files are
read once, at import, from ``voxguard/web/``; only those names are served, so no path reaches the disk.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from .errors import ApiError

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Everything the page loads comes from this origin; blob: is the recorded audio, data: the inline icons.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _load_assets() -> dict[str, tuple[bytes, str]]:
    folder = files("voxguard") / "web"
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            assets[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return assets


_ASSETS = _load_assets()

web_router = APIRouter(include_in_schema=False)


def _asset(name: str) -> Response:
    if name not in _ASSETS:
        raise ApiError(404, "not_found", f"There is no page asset named {name!r}.")
    body, media_type = _ASSETS[name]
    return Response(body, media_type=media_type, headers=_HEADERS)


@web_router.get("/")
async def index() -> Response:
    """The single page: upload or record speech and see the verdict."""
    return _asset("index.html")


@web_router.get("/web/{name}")
async def asset(name: str) -> Response:
    return _asset(name)
