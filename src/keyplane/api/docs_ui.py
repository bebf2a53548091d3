"""The interactive API docs (Swagger UI) at ``/docs``, served from the package.

FastAPI's default pages load Swagger UI (and ReDoc) from a CDN: the operator's browser then
runs third-party code next to a page where root keys get pasted, and on a machine without
internet the page stays blank. The assets come from ``swagger-ui-bundle`` instead, a package
that ships Swagger UI's dist files, and are served by the app under ``/docs/assets``. ReDoc
has no such package and is not offered.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
_OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets; the app must be built with ``docs_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

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

    @app.get(_OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
