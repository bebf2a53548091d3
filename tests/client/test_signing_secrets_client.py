"""The SDK's ``signing_secrets`` resource, async client over the in-process app."""

from __future__ import annotations

import pytest

from keyplane.client import (
    Ack,
    AsyncClient,
    NotFoundError,
    SigningSecret,
    SigningSecretCreated,
    ValidationError,
)
from keyplane.webhooks import verify
from tests.conftest import Api


async def test_signing_secret_lifecycle(sdk: AsyncClient, api: Api) -> None:
    created = await sdk.signing_secrets.create("cust_9", description="acme")
    assert isinstance(created, SigningSecretCreated)
    assert created.secret.startswith("whsec_")
    assert created.secret not in repr(created)
    assert isinstance(created.data, SigningSecret)
    secret_id = created.data.id

    signature = await sdk.signing_secrets.sign(secret_id, '{"x":1}', msg_id="evt_1")
    assert signature.msg_id == "evt_1"
    verify('{"x":1}', signature.headers, created.secret, now=signature.timestamp)

    rotated = await sdk.signing_secrets.rotate(secret_id, overlap_seconds=60)
    both = await sdk.signing_secrets.sign(secret_id, "p")
    verify("p", both.headers, created.secret, now=both.timestamp)
    verify("p", both.headers, rotated.secret, now=both.timestamp)

    page = await sdk.signing_secrets.list(owner="cust_9")
    assert [item.id for item in page.data] == [secret_id]
    assert (await sdk.signing_secrets.get(secret_id)).previous_expires_at is not None
    deleted = await sdk.signing_secrets.delete(secret_id)
    assert isinstance(deleted, SigningSecret | Ack) and deleted.id == secret_id
    with pytest.raises(NotFoundError):
        await sdk.signing_secrets.get(secret_id)
    with pytest.raises(ValidationError):
        await sdk.signing_secrets.create("")
