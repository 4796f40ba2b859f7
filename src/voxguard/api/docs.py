"""Swagger UI at ``/docs`` and ReDoc at ``/redoc``, fully offline.

Their JavaScript and CSS come from fastapi-offline's packaged copies, served under
``/static-offline-docs``. That alone is not enough: ReDoc's bundle still loads the Redocly logo from a
CDN, so both pages are sent with a Content-Security-Policy that lets the browser fetch from this origin
only. The one inline script (Swagger UI's set-up) is allowed by its hash, not by allowing inline
scripts in general.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static-offline-docs"
_STATIC_DIR = files("fastapi_offline") / "static"

# Swagger UI: no call to the online spec validator (it would fetch a badge from validator.swagger.io).
SWAGGER_PARAMETERS = {"validatorUrl": None}


def _csp(page: HTMLResponse) -> str:
    body = bytes(page.body).decode()
    scripts = re.findall(r"<script>(.*?)</script>", body, flags=re.S)
    sources = ["'self'"] + [
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts
    ]
    return (
        f"default-src 'self'; script-src {' '.join(sources)}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _csp(page)
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


# Each page: its path, its route name, the FastAPI function that draws it, its title, its assets (files
# under STATIC_URL) and its other options.
_PAGES: tuple[tuple[str, str, Callable[..., HTMLResponse], str, dict[str, str], dict[str, Any]], ...] = (
    (
        "/docs",
        "swagger_ui",
        get_swagger_ui_html,
        "Swagger UI",
        {
            "swagger_js_url": "swagger-ui-bundle.js",
            "swagger_css_url": "swagger-ui.css",
            "swagger_favicon_url": "favicon.png",
        },
        {"swagger_ui_parameters": SWAGGER_PARAMETERS},
    ),
    (
        "/redoc",
        "redoc",
        get_redoc_html,
        "ReDoc",
        {"redoc_js_url": "redoc.standalone.js", "redoc_favicon_url": "favicon.png"},
        {"with_google_fonts": False},
    ),
)


def install_docs(app: FastAPI) -> None:
    """Mount the packaged assets and add ``/docs`` and ``/redoc`` (the app is built with both off)."""
    app.mount(STATIC_URL, StaticFiles(directory=str(_STATIC_DIR)), name="static-offline-docs")
    router = APIRouter(include_in_schema=False)
    for path, name, *page in _PAGES:
        router.add_api_route(path, _page(app, *page), name=name, methods=["GET"])
    app.include_router(router)


def _page(
    app: FastAPI,
    draw: Callable[..., HTMLResponse],
    title: str,
    assets: dict[str, str],
    options: dict[str, Any],
) -> Callable[[Request], Awaitable[HTMLResponse]]:
    async def page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy's prefix, every URL carries it
        urls = {key: f"{root}{STATIC_URL}/{file}" for key, file in assets.items()}
        title_text = f"{app.title} - {title}"
        return _offline(draw(openapi_url=f"{root}{app.openapi_url}", title=title_text, **urls, **options))

    return page
