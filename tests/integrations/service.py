"""A tiny protected service, the same for every verifier the integration tests try."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from keyplane.integrations import Decision, KeyAuthMiddleware, KeyGuard, install, require_key


def dependency_service(guard: KeyGuard) -> FastAPI:
    """Routes guarded by ``require_key`` with different needs."""
    app = FastAPI()
    install(app, guard)

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/any")
    async def any_key(key: Annotated[Decision, Depends(require_key())]) -> dict[str, object]:
        return {"key_id": key.key_id, "owner": key.owner, "scopes": list(key.scopes)}

    @app.get("/admin")
    async def admin(
        key: Annotated[Decision, Depends(require_key(scopes=["admin"]))],
    ) -> dict[str, object]:
        return {"key_id": key.key_id}

    @app.get("/gpt")
    async def gpt(
        key: Annotated[Decision, Depends(require_key(model="gpt-4o"))], request: Request
    ) -> dict[str, object]:
        assert request.state.keyplane is key
        return {"key_id": key.key_id}

    return app


def middleware_service(guard: KeyGuard) -> FastAPI:
    """Every route behind the middleware except /healthz."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, object]:
        decision: Decision = request.state.keyplane
        return {"key_id": decision.key_id, "plan": decision.plan}

    app.add_middleware(KeyAuthMiddleware, guard=guard, scopes=["read"], exempt=["/healthz"])
    return app
