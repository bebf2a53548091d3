"""The API docs, Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served from packages.

FastAPI's default pages load Swagger UI and ReDoc from a CDN: the operator's browser then
runs third-party code next to a page where root keys get pasted, and on a machine without
internet the page stays blank. The assets come from packages instead, served by the app:
Swagger UI's dist files from ``swagger-ui-bundle`` under ``/docs/assets``, ReDoc's standalone
bundle from ``fastapi-standalone-docs`` under ``/redoc/assets`` (only its static files are
used). ReDoc's page is built without Google Fonts, which would be another third-party load.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_standalone_docs
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
REDOC_PATH = "/redoc"
REDOC_ASSETS_PATH = "/redoc/assets"
#: ReDoc's standalone bundle, as fastapi-standalone-docs ships it.
REDOC_ASSETS = Path(fastapi_standalone_docs.__file__).parent / "static" / "redoc"
_OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def install(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets; the app must be built with
    ``docs_url=None`` and ``redoc_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    app.mount(REDOC_ASSETS_PATH, StaticFiles(directory=str(REDOC_ASSETS)), name="redoc-assets")

    # The handler reads the app from the request: FastAPI keeps every endpoint in a cache that
    # is never emptied, so a handler closing over ``app`` would keep each app (and its whole
    # runtime) alive for the life of the process.
    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        served: FastAPI = request.app
        return get_swagger_ui_html(
            openapi_url=f"{root}{served.openapi_url}",
            title=f"{served.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{_OAUTH2_REDIRECT_PATH}",
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        served: FastAPI = request.app
        return get_redoc_html(
            openapi_url=f"{root}{served.openapi_url}",
            title=f"{served.title} - API reference",
            redoc_js_url=f"{root}{REDOC_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            with_google_fonts=False,
        )

    @app.get(_OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
