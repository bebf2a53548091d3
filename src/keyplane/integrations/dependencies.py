"""A FastAPI dependency, ``require_key``, for routes that need a usable API key.

Install a guard once with :func:`install`, then declare what each route needs::

    install(app, KeyGuard(verifier))

    @app.post("/v1/chat")
    async def chat(key: Annotated[Decision, Depends(require_key(scopes=["chat"], model="gpt-4o"))]):
        ...

Each use verifies once (and consumes the key's limits once): do not stack it with the
middleware on the same route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from keyplane.integrations import http
from keyplane.integrations.decision import Decision
from keyplane.integrations.guard import KeyGuard

_STATE_ATTRIBUTE = "keyplane_guard"


class KeyRefused(HTTPException):
    """A request's key was refused; rendered as problem+json by the handler :func:`install` adds.

    It is an ``HTTPException``, so without that handler FastAPI still answers with the right
    status and headers (in its own ``{"detail": ...}`` body).
    """

    def __init__(self, decision: Decision, headers: dict[str, str]) -> None:
        super().__init__(http.status_for(decision.code), http.detail_for(decision.code), headers)
        self.decision = decision


def install(app: FastAPI, guard: KeyGuard) -> None:
    """Make ``guard`` the one :func:`require_key` uses in ``app``, and render refusals."""
    setattr(app.state, _STATE_ATTRIBUTE, guard)
    app.add_exception_handler(KeyRefused, _refused)


async def _refused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeyRefused)  # noqa: S101 (registered for KeyRefused only)
    return JSONResponse(
        http.problem_body(exc.decision),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/problem+json",
    )


def require_key(
    scopes: Sequence[str] = (),
    model: str | None = None,
    guard: KeyGuard | None = None,
) -> Callable[[Request, Response], Awaitable[Decision]]:
    """A dependency that returns the :class:`Decision` of a usable key, or refuses the request.

    Args:
        scopes: scopes the key must hold for this route.
        model: the model the key must be allowed to use, if the route has a fixed one.
        guard: the guard to use; by default the one :func:`install` put on the app.

    Raises:
        KeyRefused: (from the dependency) 401, 402, 403 or 429, as for ``/v1/auth``.
    """
    wanted = tuple(scopes)

    async def dependency(request: Request, response: Response) -> Decision:
        chosen = guard or getattr(request.app.state, _STATE_ATTRIBUTE, None)
        if chosen is None:
            raise RuntimeError("call keyplane.integrations.dependencies.install(app, guard) first")
        peer = request.client.host if request.client else None
        decision = await chosen.check(request.headers, peer, scopes=wanted, model=model)
        if not decision.valid:
            raise KeyRefused(decision, http.response_headers(decision, chosen.now()))
        request.state.keyplane = decision
        # FastAPI merges these into the route's response (unless it returns its own Response).
        response.headers.update(http.ratelimit_headers(decision, chosen.now()))
        return decision

    return dependency
