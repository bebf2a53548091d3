"""``/v1/webhooks``: endpoints that are told about events, and their delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from keyplane.api.deps import PrincipalDep, WebhooksDep, WebhooksWriter
from keyplane.api.webhook_schemas import (
    DeliveryId,
    DeliveryList,
    DeliveryOut,
    DeliveryRef,
    DeliveryRefEnvelope,
    EndpointId,
    WebhookCreate,
    WebhookEnvelope,
    WebhookList,
    WebhookOut,
    WebhookSecretEnvelope,
    WebhookUpdate,
    WebhookWithSecret,
)
from keyplane.services.webhooks import IssuedEndpoint, NewEndpoint

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

MAX_PAGE = 100


def _with_secret(issued: IssuedEndpoint) -> WebhookSecretEnvelope:
    shown = WebhookOut.of(issued.endpoint).model_dump()
    return WebhookSecretEnvelope(data=WebhookWithSecret(**shown, secret=issued.secret))


@router.post("", status_code=201, response_model=WebhookSecretEnvelope)
async def create_webhook(
    body: WebhookCreate, principal: WebhooksWriter, webhooks: WebhooksDep
) -> WebhookSecretEnvelope:
    """Register an endpoint; its signing secret is in this answer only."""
    new = NewEndpoint(
        url=body.url,
        events=tuple(body.events),
        kind=body.kind,
        description=body.description,
        enabled=body.enabled,
        project_id=body.project,
    )
    return _with_secret(await webhooks.create(principal, new))


@router.get("", response_model=WebhookList)
async def list_webhooks(principal: PrincipalDep, webhooks: WebhooksDep) -> WebhookList:
    """Every endpoint the caller reaches."""
    return WebhookList(data=[WebhookOut.of(e) for e in await webhooks.list(principal)])


@router.get("/{endpoint_id}", response_model=WebhookEnvelope)
async def get_webhook(
    endpoint_id: EndpointId, principal: PrincipalDep, webhooks: WebhooksDep
) -> WebhookEnvelope:
    """One endpoint."""
    return WebhookEnvelope(data=WebhookOut.of(await webhooks.get(principal, endpoint_id)))


@router.patch("/{endpoint_id}", response_model=WebhookEnvelope)
async def update_webhook(
    endpoint_id: EndpointId, body: WebhookUpdate, principal: WebhooksWriter, webhooks: WebhooksDep
) -> WebhookEnvelope:
    """Change an endpoint's URL, events, description or enabled state."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    updated = await webhooks.update(principal, endpoint_id, changes)
    return WebhookEnvelope(data=WebhookOut.of(updated))


@router.delete("/{endpoint_id}", response_model=WebhookEnvelope)
async def delete_webhook(
    endpoint_id: EndpointId, principal: PrincipalDep, webhooks: WebhooksDep
) -> WebhookEnvelope:
    """Delete an endpoint and its delivery log."""
    return WebhookEnvelope(data=WebhookOut.of(await webhooks.delete(principal, endpoint_id)))


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookSecretEnvelope)
async def rotate_webhook_secret(
    endpoint_id: EndpointId, principal: WebhooksWriter, webhooks: WebhooksDep
) -> WebhookSecretEnvelope:
    """A new signing secret; the old one keeps signing alongside it for the overlap period."""
    return _with_secret(await webhooks.rotate_secret(principal, endpoint_id))


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(
    endpoint_id: EndpointId,
    principal: PrincipalDep,
    webhooks: WebhooksDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[DeliveryId | None, Query(description="from a previous page")] = None,
) -> DeliveryList:
    """The endpoint's deliveries, newest first, each with its attempts."""
    found = await webhooks.deliveries(principal, endpoint_id, cursor, limit)
    next_cursor = found[-1].id if len(found) == limit else None
    return DeliveryList(data=[DeliveryOut.of(d) for d in found], next_cursor=next_cursor)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=DeliveryRefEnvelope,
)
async def replay_delivery(
    endpoint_id: EndpointId,
    delivery_id: DeliveryId,
    principal: WebhooksWriter,
    webhooks: WebhooksDep,
) -> DeliveryRefEnvelope:
    """Send a delivery again (same webhook-id)."""
    await webhooks.replay(principal, endpoint_id, delivery_id)
    return DeliveryRefEnvelope(data=DeliveryRef(id=delivery_id))


@router.post("/{endpoint_id}/test", status_code=202, response_model=DeliveryRefEnvelope)
async def test_webhook(
    endpoint_id: EndpointId, principal: WebhooksWriter, webhooks: WebhooksDep
) -> DeliveryRefEnvelope:
    """Queue a ping to this endpoint; its delivery id."""
    return DeliveryRefEnvelope(data=DeliveryRef(id=await webhooks.test(principal, endpoint_id)))
