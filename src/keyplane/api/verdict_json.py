"""A verdict's JSON answer, written directly: the bytes ``json.dumps(verdict_body(verdict))``
gives inside an exact-credits route (``api/exact.py``), without building the dictionaries.

Every verify answers with this document, so it is worth writing the way a gateway reads it:

* The key's own part (id, owner, name, environment, tags, metadata, scopes, expiry, plan) is
  the same for every verify of one cached key: it is written once per cached record and the
  scopes and plan it was written with, found by the record's identity
  (``services/identity_cache.py``). A reloaded key is a new record.
* A policy's directives are written once per compiled policy, the same way.
* Limits are written from their fields; credits as the exact numbers ``money.to_text`` gives,
  which is what the exact-credits markers of ``verdict_body`` become.

``verdict_body`` stays the reference: ``tests/api/test_verdict_json.py`` holds the two equal,
byte for byte, on random verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from keyplane.domain.admission import LimitState
from keyplane.domain.keys import KeyRecord
from keyplane.domain.money import to_text
from keyplane.services.identity_cache import IdentityCache
from keyplane.services.verify import Verdict

#: The key's part of the document, by record and (scopes, plan).
_KEY_PARTS: IdentityCache[KeyRecord, str] = IdentityCache()
#: The directives' JSON, by the policy's directives mapping.
_DIRECTIVES: IdentityCache[Mapping[str, Any], str] = IdentityCache()

#: The answer for a verdict without a key (malformed or unknown), from the code on.
_NO_KEY = (
    ', "key_id": null, "owner": null, "name": null, "environment": null, "tags": [], '
    '"metadata": {}, "scopes": [], "expires_at": null, "plan": null, "request_id": null, '
    '"limits": [], "retry_after": null, "directives": {}, "rotation_pending": false}'
)


def verdict_json(verdict: Verdict) -> bytes:
    """The JSON document of ``verdict`` (see the module doc)."""
    valid = "true" if verdict.valid else "false"
    head = f'{{"valid": {valid}, "code": {_string(verdict.code.value)}'
    record = verdict.record
    if record is None:
        return (head + _NO_KEY).encode()
    request_id = "null" if verdict.request_id is None else _string(verdict.request_id)
    limits = ", ".join([_limit(limit) for limit in verdict.limits])
    retry_after = "null" if verdict.retry_after is None else json.dumps(verdict.retry_after)
    pending = "true" if verdict.rotation_pending else "false"
    return (
        f"{head}, {_key_part(record, verdict.scopes, verdict.plan)}, "
        f'"request_id": {request_id}, "limits": [{limits}], "retry_after": {retry_after}, '
        f'"directives": {_directives(verdict.directives)}, "rotation_pending": {pending}}}'
    ).encode()


def _key_part(record: KeyRecord, scopes: tuple[str, ...], plan: str | None) -> str:
    found = _KEY_PARTS.get(record, (scopes, plan))
    if found is not None:
        return found
    part = (
        f'"key_id": {_string(record.id)}, "owner": {json.dumps(record.owner)}, '
        f'"name": {_string(record.name)}, "environment": {_string(record.environment.value)}, '
        f'"tags": {json.dumps(list(record.tags))}, "metadata": {json.dumps(record.metadata)}, '
        f'"scopes": {json.dumps(list(scopes))}, "expires_at": {_time(record.expires_at)}, '
        f'"plan": {json.dumps(plan)}'
    )
    return _KEY_PARTS.put(record, (scopes, plan), part)


def _directives(directives: Mapping[str, Any]) -> str:
    if not directives:
        return "{}"
    found = _DIRECTIVES.get(directives)
    if found is not None:
        return found
    return _DIRECTIVES.put(directives, (), json.dumps(directives))


def _limit(limit: LimitState) -> str:
    if limit.kind == "budget":
        amount, remaining = to_text(limit.limit), to_text(limit.remaining)
    else:
        amount, remaining = str(limit.limit), str(limit.remaining)
    carry = "" if limit.carry is None else f', "carry": {to_text(limit.carry)}'
    return (
        f'{{"name": {_string(limit.name)}, "kind": {_string(limit.kind)}, "limit": {amount}, '
        f'"remaining": {remaining}, "reset_at": {_time(limit.reset_at)}{carry}}}'
    )


def _time(when: datetime | None) -> str:
    # As routes/verify.py's _utc_text writes it, quoted.
    return "null" if when is None else f'"{when.isoformat().replace("+00:00", "Z")}"'
