"""The SDK's ``webhooks`` resource, async client over the in-process app."""

from __future__ import annotations

import pytest

from keyplane.client import AsyncClient, NotFoundError, ValidationError
from tests.conftest import Api


async def test_webhook_lifecycle(sdk: AsyncClient, api: Api) -> None:
    created = await sdk.webhooks.create(
        "https://hooks.example.com/k", ["key.*"], description="billing"
    )
    assert created.secret is not None and created.secret.startswith("whsec_")
    assert "whsec_" not in repr(created)
    shown = await sdk.webhooks.get(created.id)
    assert shown.secret is None and shown.events == ["key.*"]
    assert [hook.id for hook in (await sdk.webhooks.list()).data] == [created.id]
    updated = await sdk.webhooks.update(created.id, enabled=False, events=["ping"])
    assert updated.enabled is False and updated.events == ["ping"]
    rotated = await sdk.webhooks.rotate_secret(created.id)
    assert rotated.secret not in (None, created.secret)
    ping = await sdk.webhooks.test(created.id)
    [delivery] = (await sdk.webhooks.deliveries(created.id)).data
    assert delivery.id == ping.id and delivery.event_type == "ping"
    assert (await sdk.webhooks.replay(created.id, ping.id)).id == ping.id
    await sdk.webhooks.delete(created.id)
    with pytest.raises(NotFoundError):
        await sdk.webhooks.get(created.id)
    with pytest.raises(ValidationError):
        await sdk.webhooks.create("https://hooks.example.com/k", ["nope"])
