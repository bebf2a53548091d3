"""``create_app``: the ASGI application for given settings."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from keyplane import __version__, metrics
from keyplane.api import compat, docs_ui, openapi, problems
from keyplane.api.body_limit import BodySizeLimit
from keyplane.api.data_plane import DataPlane, lean_forward_auth, lean_usage, lean_verify
from keyplane.api.header_limit import LIFESPAN_KEY, HeaderLimitMiddleware, HeaderLimits
from keyplane.api.observe import Observer, RequestObserver
from keyplane.api.routes import (
    analytics,
    audit,
    audit_verify,
    auth,
    health,
    key_limits,
    keys,
    leaks,
    management_keys,
    organization,
    plans,
    projects,
    reports,
    rotation,
    signing_secrets,
    streams,
    usage,
    vault,
    verify,
    webhooks,
)
from keyplane.api.security_headers import ResponseHeaders, SecurityHeaders
from keyplane.domain.clock import Clock
from keyplane.services.runtime import Runtime
from keyplane.services.supervisor import Supervisor
from keyplane.settings import Settings, generated_root_key_path, write_private_file

log = logging.getLogger(__name__)


def announce_root_key(secret: str, settings: Settings) -> None:
    """Hand a freshly generated root management key to the operator, once, never in a log.

    On a terminal it is shown on stderr. Otherwise stderr is a log stream (systemd, Docker,
    a file), where a key would be kept and shipped around: it goes to a 0600 file instead, and
    only that file's path is logged.
    """
    if sys.stderr.isatty():
        print(
            "\n  Keyplane generated a root management key. It is shown only this once;"
            " store it now.\n\n"
            f"    {secret}\n\n"
            "  Use it as 'Authorization: Bearer <key>'. Set KEYPLANE_ROOT_KEY to use your own.\n",
            file=sys.stderr,
            flush=True,
        )
        return
    path = generated_root_key_path(settings)
    try:
        write_private_file(path, secret + "\n")
    except OSError as exc:
        log.error(
            "generated a root management key but could not write it to %s (%s); "
            "set KEYPLANE_ROOT_KEY to manage this server",
            path,
            exc.strerror or type(exc).__name__,
        )
        return
    log.warning(
        "generated a root management key and wrote it to %s (mode 0600): "
        "store it elsewhere and delete the file",
        path.resolve(),
    )


class KeyplaneApp(FastAPI):
    """FastAPI, with the data plane's requests (verify, usage reports, forward auth, healthz)
    answered ahead of its middleware stack and router by :class:`DataPlane`, which gives them
    what the stack would (``api/data_plane.py``); every other request, and any of those it
    does not answer itself, goes through the stack."""

    #: ``None`` with ``KEYPLANE_LEAN_DATA_PLANE=false``: FastAPI answers everything.
    data_plane: DataPlane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plane = self.data_plane
        if plane is not None and scope["type"] == "http":
            answerer = plane.answerer(scope)
            if answerer is not None:
                scope["app"] = self
                await plane.serve(*answerer, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    on_root_key: Callable[[str], None] | None = None,
    supervisor: Supervisor | None = None,
) -> FastAPI:
    """Build the Keyplane API. Storage is opened in the lifespan, not at import or here.

    ``on_root_key`` receives a root key generated on the first start; by default
    :func:`announce_root_key`. ``supervisor`` runs the background loops (tests inject one
    whose restart backoff does not really wait).
    """
    settings = settings or Settings()
    announce = on_root_key or functools.partial(announce_root_key, settings=settings)
    header_limits = HeaderLimits(settings.max_header_count, settings.max_header_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        runtime = await Runtime.start(settings, clock, supervisor)
        app.state.runtime = runtime
        # Everything alive now (modules, the app, the runtime) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it all, which it
        # otherwise does every few thousand requests (docs/performance.md).
        if settings.gc_freeze:
            gc.freeze()
        grpc_server = None
        if settings.grpc_port is not None:
            # Imported here: grpc loads a native library, needless when gRPC is off.
            from keyplane.grpc.server import GrpcServer

            try:
                grpc_server = await GrpcServer.start(runtime, settings.host, settings.grpc_port)
            except BaseException:
                await runtime.stop()
                raise
            app.state.grpc_port = grpc_server.port
        if runtime.generated_root_key is not None:
            announce(runtime.generated_root_key)
            runtime.generated_root_key = None
        try:
            # The lifespan state reaches every connection's protocol: the header caps are
            # enforced there, before a header is buffered (api/header_limit.py).
            yield {LIFESPAN_KEY: header_limits}
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await runtime.stop()
            # A worker stopping cleanly: its live gauges leave the shared metrics.
            metrics.process_exiting()
            # What start froze may go now: a process that starts apps again (the tests, an
            # embedding program) must not keep every stopped runtime forever. Only when this
            # app froze it: what the process froze itself is not the app's to thaw.
            if settings.gc_freeze:
                gc.unfreeze()

    app = KeyplaneApp(
        title="Keyplane",
        version=__version__,
        summary="Self-hosted API key management",
        lifespan=lifespan,
        # /docs and /redoc are served from packaged assets (docs_ui), never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    docs_ui.install(app)
    app.include_router(health.router)
    for router in (
        leaks.router,  # before keys: /v1/leaked-keys is not a key id
        keys.router,
        key_limits.router,
        verify.router,
        auth.router,
        usage.router,
        analytics.router,
        streams.router,
        plans.router,
        management_keys.router,
        projects.router,
        organization.router,
        vault.router,
        signing_secrets.router,
        reports.router,
        webhooks.router,
        audit.router,
        audit_verify.router,
        rotation.router,
        rotation.self_router,
        rotation.jobs_router,
        rotation.plans_router,
    ):
        app.include_router(router)
    # Compatibility surfaces render their own errors; api/openapi.py documents them apart.
    for router in compat.ROUTERS:
        app.include_router(router)
    openapi.install(app)
    observer = Observer(access_log=settings.access_log)
    response_headers = ResponseHeaders(
        cacheable_prefixes=(docs_ui.ASSETS_PATH + "/", docs_ui.REDOC_ASSETS_PATH + "/"),
        version=__version__,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, renderers=compat.TOO_LARGE)
    app.add_middleware(HeaderLimitMiddleware, limits=header_limits)
    app.add_middleware(SecurityHeaders, headers=response_headers)
    # Added last, so it runs first: every answer, 413 and 431 included, is counted, logged
    # and carries X-Request-Id (and the security headers, added just inside it).
    app.add_middleware(RequestObserver, observer=observer)
    if settings.lean_data_plane:
        app.data_plane = DataPlane(
            functools.partial(FastAPI.__call__, app),
            observer=observer,
            headers=response_headers,
            header_limits=header_limits,
            max_body_bytes=settings.max_body_bytes,
            verify=lean_verify(_route(verify.router, "/v1/verify")),
            health=_route(health.router, "/healthz"),
            version=__version__,
            auth=lean_forward_auth(_routes(auth.router, "/v1/auth")),
            auth_any_path=lean_forward_auth(_routes(auth.router, "/v1/auth/{path:path}")),
            usage=lean_usage(_route(usage.router, "/v1/usage")),
        )
    return app


def _route(router: APIRouter, path: str) -> APIRoute:
    return _routes(router, path)[0]


def _routes(router: APIRouter, path: str) -> list[APIRoute]:
    return [r for r in router.routes if isinstance(r, APIRoute) and r.path == path]
