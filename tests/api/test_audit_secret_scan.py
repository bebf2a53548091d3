"""A secret scan over the audit log as read and exported: after keys are created, updated,
rotated, disabled and revoked, management keys issued and vault credentials added and
changed, no plaintext secret appears in any listing or any export, in any format."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from tests.conftest import ROOT_KEY, Api

CREDENTIAL = "sk-upstream-secret-0123456789abcdef"
NEW_CREDENTIAL = "sk-upstream-secret-rotated-999888777"


async def _secrets_made(api: Api) -> list[str]:
    made = [ROOT_KEY, CREDENTIAL, NEW_CREDENTIAL]
    for number in range(3):
        key, data = await api.create_key(name=f"scan {number}", owner="cust_1")
        made.append(key)
        key_id = data["id"]
        patched = await api.client.patch(f"/v1/keys/{key_id}", json={"name": "renamed"})
        assert patched.status_code == 200, patched.text
        rotated = await api.client.post(
            f"/v1/keys/{key_id}/rotate", json={"grace_period_seconds": 60}
        )
        assert rotated.status_code == 200, rotated.text
        made.append(rotated.json()["key"])
        assert (await api.client.post(f"/v1/keys/{key_id}/disable", json={})).status_code == 200
        assert (await api.client.delete(f"/v1/keys/{key_id}")).status_code == 200
    made.append(await api.management_key("audit:read"))
    added = await api.client.post(
        "/v1/vault/credentials",
        json={"provider": "openai", "alias": "scan", "secret": CREDENTIAL},
    )
    assert added.status_code == 201, added.text
    credential_id = added.json()["data"]["id"]
    changed = await api.client.patch(
        f"/v1/vault/credentials/{credential_id}", json={"secret": NEW_CREDENTIAL}
    )
    assert changed.status_code == 200, changed.text
    return made


async def test_no_plaintext_secret_in_any_listing_or_export(api: Api) -> None:
    made = await _secrets_made(api)
    listing = await api.client.get("/v1/audit", params={"limit": 200})
    assert listing.status_code == 200
    actions = {item["action"] for item in listing.json()["data"]}
    # The scan means something only if the changes were recorded.
    assert {"key.created", "key.rotated", "key.revoked"} <= actions, actions
    texts = [listing.text]
    for key_id in {item["target"]["id"] for item in listing.json()["data"]}:
        if key_id and key_id.startswith("key_"):
            texts.append((await api.client.get(f"/v1/keys/{key_id}/audit")).text)
    for fmt in ("csv", "json", "parquet"):
        for include_pii in (True, False):
            response = await api.client.post(
                "/v1/audit/export", json={"format": fmt, "include_pii": include_pii}
            )
            assert response.status_code == 200, response.text
            if fmt == "parquet":
                rows = pq.read_table(io.BytesIO(response.content)).to_pylist()
                assert len(rows) >= 10
                texts.append(json.dumps(rows, default=str))
            else:
                texts.append(response.content.decode("utf-8"))
    for text in texts:
        for secret in made:
            assert secret not in text
            # Not even the secret's distinctive body (the part after its prefix).
            assert secret[-20:] not in text
