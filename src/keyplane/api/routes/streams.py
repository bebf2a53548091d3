"""Live usage streams: one key's (``/v1/keys/{key_id}/usage/stream``) or the organization's
(``/v1/usage/stream``, with filters), as Server-Sent Events or over a WebSocket.

The same path serves both: a WebSocket upgrade gets the socket, a plain ``GET`` the event
stream. Authentication is the management API's (``Authorization: Bearer``, scope
``usage:read``, the key's project within reach). Bad input is refused before anything is
subscribed: a problem document with a 4xx status (on a WebSocket, as the handshake's denial
response where the server supports it, else a close with code 1008).

Each message is one event as JSON, ``{"type": "usage", ...}``; a subscriber that falls behind
receives ``{"type": "dropped", "reason": "slow_consumer", "missed": n}`` and the stream ends.
Idle streams carry a keep-alive (an SSE comment, or ``{"type": "keepalive"}`` on a socket)
every ``KEYPLANE_USAGE_STREAM_HEARTBEAT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.websockets import WebSocketState

from keyplane.api import problems
from keyplane.api.deps import PrincipalDep, StreamsDep, get_principal
from keyplane.api.params import reject_unknown_params
from keyplane.domain import money
from keyplane.errors import KeyplaneError, ValidationError
from keyplane.services.usage_stream import MAX_OWNER, Dropped, Subscription, UsageEvent

router = APIRouter(prefix="/v1", tags=["usage"])

KEY_ID = r"^key_[0-9a-z]{26}$"
PROJECT_ID = r"^proj_[0-9a-z]{26}$"
_FILTERS = {"key_id", "project_id", "owner", "min_cost"}
_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `event: usage` with one event as JSON each, "
        "`event: dropped` once if the reader fell behind (the stream then ends).",
        "content": {"text/event-stream": {}},
    }
}


def render(item: UsageEvent | Dropped) -> str:
    """One stream message as JSON, credits exact (``cost`` is an exact JSON number)."""
    if isinstance(item, Dropped):
        return json.dumps({"type": "dropped", "reason": item.reason, "missed": item.missed})
    head = json.dumps(
        {
            "type": "usage",
            "id": item.id,
            "key_id": item.key_id,
            "project_id": item.project_id,
            "owner": item.owner,
            "request_id": item.request_id,
            "model": item.model,
            "input_tokens": item.input_tokens,
            "output_tokens": item.output_tokens,
            "latency_ms": item.latency_ms,
            "status": item.status,
            "recorded_at": item.recorded_at.isoformat().replace("+00:00", "Z"),
        }
    )
    return f'{head[:-1]}, "cost": {money.to_text(item.cost_micros)}}}'


def _min_cost(text: str | None) -> int:
    if text is None:
        return 0
    try:
        micros = money.to_micros(text)
    except ValueError as exc:
        raise ValidationError(f"min_cost: {exc}", code="INVALID_MIN_COST") from None
    if micros < 0:
        raise ValidationError("min_cost must not be negative", code="INVALID_MIN_COST")
    return micros


def _filters(params: Mapping[str, str], *, org_wide: bool) -> dict[str, Any]:
    """The stream's filters from the query string, checked (a WebSocket has no FastAPI
    validation to fall back on, so both forms read them here)."""
    allowed = _FILTERS if org_wide else set()
    unknown = sorted(name for name in params if name not in allowed)
    if unknown:
        shown = ", ".join(ascii(name) for name in unknown)[:200]
        raise ValidationError(f"unknown query parameter(s): {shown}", code="UNKNOWN_PARAMETER")
    owner = params.get("owner")
    if owner is not None and not 1 <= len(owner) <= MAX_OWNER:
        raise ValidationError(f"owner must be 1-{MAX_OWNER} characters", code="INVALID_OWNER")
    min_cost = params.get("min_cost")
    if min_cost is not None and len(min_cost) > 40:
        raise ValidationError("min_cost is too long", code="INVALID_MIN_COST")
    return {
        "key_id": params.get("key_id"),
        "project_id": params.get("project_id"),
        "owner": owner,
        "min_cost": _min_cost(min_cost),
    }


async def _sse(subscription: Subscription, heartbeat: float) -> AsyncIterator[str]:
    with subscription:
        yield ": keyplane usage stream\n\n"  # sent at once: the client knows it is subscribed
        while True:
            item = await subscription.next(timeout=heartbeat)
            if item is None:
                yield ": keep-alive\n\n"
            elif isinstance(item, Dropped):
                yield f"event: dropped\ndata: {render(item)}\n\n"
                return
            else:
                yield f"event: usage\nid: {item.id}\ndata: {render(item)}\n\n"


def _heartbeat(request: Request | WebSocket) -> float:
    seconds: float = request.app.state.runtime.settings.usage_stream_heartbeat_seconds
    return seconds


@router.get(
    "/keys/{key_id}/usage/stream", response_class=StreamingResponse, responses=_EVENT_STREAM
)
async def key_usage_stream(
    request: Request,
    principal: PrincipalDep,
    streams: StreamsDep,
    key_id: Annotated[str, Path(pattern=KEY_ID)],
) -> StreamingResponse:
    """One key's usage reports as they become durable (Server-Sent Events; also a WebSocket)."""
    reject_unknown_params(request, set())
    subscription = await streams.subscribe(principal, key_id=key_id)
    return _event_stream(subscription, _heartbeat(request))


@router.get("/usage/stream", response_class=StreamingResponse, responses=_EVENT_STREAM)
async def usage_stream(
    request: Request,
    principal: PrincipalDep,
    streams: StreamsDep,
    key_id: Annotated[str | None, Query(pattern=KEY_ID)] = None,
    project_id: Annotated[str | None, Query(pattern=PROJECT_ID)] = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=MAX_OWNER)] = None,
    min_cost: Annotated[
        str | None, Query(max_length=40, description="credits: reports costing at least this")
    ] = None,
) -> StreamingResponse:
    """The organization's usage reports as they become durable, filtered (SSE; also a
    WebSocket)."""
    filters = _filters(request.query_params, org_wide=True)
    subscription = await streams.subscribe(principal, **filters)
    return _event_stream(subscription, _heartbeat(request))


def _event_stream(subscription: Subscription, heartbeat: float) -> StreamingResponse:
    return StreamingResponse(
        _sse(subscription, heartbeat),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
        # Also when the body never started (the client left at once): unsubscribe.
        background=BackgroundTask(subscription.close),
    )


@router.websocket("/keys/{key_id}/usage/stream")
async def key_usage_socket(websocket: WebSocket, key_id: str) -> None:
    await _serve_socket(websocket, key_id=key_id)


@router.websocket("/usage/stream")
async def usage_socket(websocket: WebSocket) -> None:
    await _serve_socket(websocket, key_id=None)


async def _serve_socket(websocket: WebSocket, key_id: str | None) -> None:
    streams = websocket.app.state.runtime.services.streams
    try:
        principal = await get_principal(websocket)
        if key_id is None:
            filters = _filters(websocket.query_params, org_wide=True)
        else:
            filters = {**_filters(websocket.query_params, org_wide=False), "key_id": key_id}
        subscription = await streams.subscribe(principal, **filters)
    except KeyplaneError as exc:
        await _deny(websocket, exc)
        return
    heartbeat = _heartbeat(websocket)
    with subscription:
        await websocket.accept()
        closed = asyncio.ensure_future(_until_closed(websocket))
        try:
            while not closed.done():
                waiting = asyncio.ensure_future(subscription.next(timeout=heartbeat))
                await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    break
                item = waiting.result()
                if item is None:
                    await websocket.send_text('{"type": "keepalive"}')
                    continue
                await websocket.send_text(render(item))
                if isinstance(item, Dropped):
                    await websocket.close(code=1008, reason="slow consumer")
                    break
        except WebSocketDisconnect:
            pass
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await closed


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it goes away."""
    while websocket.client_state is WebSocketState.CONNECTED:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _deny(websocket: WebSocket, exc: KeyplaneError) -> None:
    """Refuse the handshake with the problem document an HTTP request would get."""
    status = problems.status_for(exc)
    extensions = websocket.scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        await websocket.send_denial_response(problems.problem(status, exc.code, exc.message))
    else:
        await websocket.close(code=1008, reason=exc.code)
