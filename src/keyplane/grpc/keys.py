"""``keyplane.v1.Keys`` and ``keyplane.v1.Verifier``: the REST key routes and verify, over gRPC.

Each call authenticates the management key in the ``authorization`` metadata exactly as REST
does (``ManagementKeys.authenticate``), validates the request with the REST API's own models,
and calls the same services, which check the caller's scope and tenancy themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from pydantic import TypeAdapter

from keyplane.api.params import check_key_ref
from keyplane.api.policy import to_document
from keyplane.api.routes.keys import create_fingerprint
from keyplane.api.routes.verify import service_request
from keyplane.api.schemas import (
    KeyCreate,
    KeyDisable,
    KeyRevoke,
    KeyRotate,
    KeyUpdate,
    RequestId,
)
from keyplane.api.schemas import VerifyRequest as VerifyBody
from keyplane.domain.changes import Origin
from keyplane.domain.keys import Environment, KeyRecord, KeyStatus, effective_status
from keyplane.domain.tenancy import Principal
from keyplane.errors import ValidationError
from keyplane.grpc import convert
from keyplane.grpc.gen.keyplane.v1 import keys_pb2 as pb
from keyplane.grpc.observe import observed
from keyplane.grpc.status import abort, abort_with
from keyplane.services.authz import may_read, require_scope
from keyplane.services.keys import Idempotency, IssuedKey, NewKey
from keyplane.services.runtime import Runtime
from keyplane.store.base import KeyFilter

_REQUEST_ID = TypeAdapter(RequestId)
_MAX_REF = 200
_MAX_PAGE = 1000
_MAX_FILTER = 200


def bearer(context: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def origin_of(context: Any) -> Origin:
    """Where the call came from, for the audit log: the peer address and user agent."""
    peer = context.peer() or ""
    ip: str | None = None
    if peer.startswith("ipv4:"):
        ip = peer[5:].rsplit(":", 1)[0]
    elif peer.startswith("ipv6:"):
        ip = peer[5:].rsplit(":", 1)[0].strip("[]")
    agent = next((v for k, v in context.invocation_metadata() or () if k == "user-agent"), None)
    return Origin.of(ip, agent if isinstance(agent, str) else None, None)


Handler = Callable[[Principal, Any], Awaitable[Message]]


class KeysApi:
    """The handlers of ``Keys`` and ``Verifier``, over one runtime's services."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._services = runtime.services
        self._clock = runtime.clock

    def methods(self) -> dict[str, tuple[type[Message], Handler]]:
        """Method path -> (request type, handler)."""
        keys = "/keyplane.v1.Keys/"
        return {
            keys + "CreateKey": (pb.CreateKeyRequest, self.create),
            keys + "GetKey": (pb.KeyRef, self.get),
            keys + "ListKeys": (pb.ListKeysRequest, self.list),
            keys + "UpdateKey": (pb.UpdateKeyRequest, self.update),
            keys + "RotateKey": (pb.RotateKeyRequest, self.rotate),
            keys + "DisableKey": (pb.DisableKeyRequest, self.disable),
            keys + "EnableKey": (pb.KeyRef, self.enable),
            keys + "RevokeKey": (pb.RevokeKeyRequest, self.revoke),
            "/keyplane.v1.Verifier/Verify": (pb.VerifyRequest, self.verify),
        }

    def handler(self, path: str, request_type: type[Message], handle: Handler) -> Any:
        """A unary handler taking raw bytes, so that an undecodable message is a clean
        INVALID_ARGUMENT rather than grpc's INTERNAL "Exception deserializing request"."""

        async def call(raw: bytes, context: Any) -> bytes:
            async with observed(path, context, self._runtime.settings.access_log):
                return await handle_raw(raw, context)

        async def handle_raw(raw: bytes, context: Any) -> bytes:
            request = request_type()
            try:
                request.ParseFromString(raw)
            except (DecodeError, RecursionError):
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "INVALID_MESSAGE",
                    "the request is not a valid protobuf message",
                )
            try:
                principal = await self._services.management.authenticate(
                    bearer(context), origin_of(context)
                )
                response = await handle(principal, request)
            except Exception as exc:
                await abort_with(context, exc)
            serialized: bytes = response.SerializeToString()
            return serialized

        return grpc.unary_unary_rpc_method_handler(call)

    # -- the key lifecycle ----------------------------------------------------------------

    async def _key(self, principal: Principal, record: KeyRecord) -> pb.Key:
        if not may_read(principal, "keys:read"):
            return pb.Key(id=record.id, status=effective_status(record, self._clock.now()).value)
        [view] = await self._services.keys.views(principal, [record])
        return convert.key_message(view, self._clock.now())

    async def _issued(self, principal: Principal, issued: IssuedKey) -> pb.IssuedKey:
        key = await self._key(principal, issued.record)
        return pb.IssuedKey(
            secret=issued.secret,
            key=key,
            replayed=issued.replayed,
            signing_secret=issued.signing_secret,
        )

    async def create(self, principal: Principal, request: pb.CreateKeyRequest) -> pb.IssuedKey:
        require_scope(principal, "keys:write")  # before the body is read, as REST does
        fields: dict[str, Any] = convert.present(
            request,
            ("environment", "project_id", "label", "description", "owner", "expires_at", "plan"),
        )
        fields["name"] = request.name
        fields["tags"] = list(request.tags)
        fields["scopes"] = list(request.scopes)
        if request.HasField("metadata_json"):
            fields["metadata"] = convert.json_object("metadata_json", request.metadata_json)
        if request.HasField("policy_json"):
            fields["policy"] = convert.json_object("policy_json", request.policy_json)
        body = KeyCreate.model_validate(fields)
        idempotency = None
        if request.HasField("idempotency_key"):
            token = _REQUEST_ID.validate_python(request.idempotency_key)
            # REST's fingerprint of the same request (api/routes/keys.py): a retry over either
            # surface replays the key, another request under the same idempotency key is
            # refused as IDEMPOTENCY_KEY_REUSED.
            idempotency = Idempotency(token, create_fingerprint(body))
        issued = await self._services.keys.create(
            principal,
            NewKey(
                name=body.name,
                environment=body.environment,
                project_id=body.project_id,
                label=body.label,
                description=body.description,
                owner=body.owner,
                tags=tuple(body.tags),
                metadata=body.metadata,
                scopes=tuple(body.scopes),
                expires_at=body.expires_at,
                plan=body.plan,
                policy=to_document(body.policy),
            ),
            idempotency,
        )
        return await self._issued(principal, issued)

    async def get(self, principal: Principal, request: pb.KeyRef) -> pb.Key:
        record = await self._services.keys.get(principal, _ref(request.id_or_hash))
        [view] = await self._services.keys.views(principal, [record])
        return convert.key_message(view, self._clock.now())

    async def list(self, principal: Principal, request: pb.ListKeysRequest) -> pb.KeyPage:
        limit = request.limit if request.HasField("limit") else 50
        if not 1 <= limit <= _MAX_PAGE:
            raise _invalid("limit", f"from 1 to {_MAX_PAGE}")
        texts = {
            name: _text(name, value, _MAX_FILTER)
            for name, value in convert.present(
                request, ("owner", "tag", "project", "name", "cursor")
            ).items()
        }
        filters = KeyFilter(
            owner=texts.get("owner"),
            tag=texts.get("tag"),
            environment=_enum(Environment, "environment", request, "environment"),
            status=_enum(KeyStatus, "status", request, "status"),
            project_id=texts.get("project"),
            name_contains=texts.get("name"),
        )
        records = await self._services.keys.list(principal, filters, texts.get("cursor"), limit + 1)
        page = records[:limit]
        has_more = len(records) > limit
        now = self._clock.now()
        views = await self._services.keys.views(principal, page)
        return pb.KeyPage(
            keys=[convert.key_message(view, now) for view in views],
            next_cursor=page[-1].id if has_more and page else "",
            has_more=has_more,
        )

    async def update(self, principal: Principal, request: pb.UpdateKeyRequest) -> pb.Key:
        require_scope(principal, "keys:write")
        fields: dict[str, Any] = convert.present(
            request, ("name", "label", "description", "owner", "expires_at", "plan")
        )
        if request.set_tags:
            fields["tags"] = list(request.tags)
        if request.set_scopes:
            fields["scopes"] = list(request.scopes)
        if request.HasField("metadata_json"):
            fields["metadata"] = convert.json_object("metadata_json", request.metadata_json)
        if request.HasField("policy_json"):
            fields["policy"] = convert.json_object("policy_json", request.policy_json)
        clearable = {"label", "description", "owner", "expires_at", "plan", "policy"}
        for name in request.clear:
            if name not in clearable:
                raise _invalid("clear", "names one of " + ", ".join(sorted(clearable)))
            if name in fields:
                raise _invalid("clear", f"{name} is both set and cleared")
            fields[name] = None
        body = KeyUpdate.model_validate(fields)
        changes: dict[str, Any] = body.model_dump(exclude_unset=True)
        for field in ("tags", "scopes"):
            if field in changes:
                changes[field] = tuple(changes[field] or ())
        if "policy" in changes:
            changes["policy"] = to_document(body.policy)
        record = await self._services.keys.update(principal, _ref(request.id_or_hash), changes)
        return await self._key(principal, record)

    async def rotate(self, principal: Principal, request: pb.RotateKeyRequest) -> pb.IssuedKey:
        body = KeyRotate.model_validate({"grace_period_seconds": request.grace_period_seconds})
        issued = await self._services.keys.rotate(
            principal, _ref(request.id_or_hash), body.grace_period()
        )
        return await self._issued(principal, issued)

    async def disable(self, principal: Principal, request: pb.DisableKeyRequest) -> pb.Key:
        body = KeyDisable.model_validate(convert.present(request, ("reason", "auto_enable_after")))
        after = (
            None if body.auto_enable_after is None else timedelta(seconds=body.auto_enable_after)
        )
        record = await self._services.keys.disable(
            principal, _ref(request.id_or_hash), body.reason, after
        )
        return await self._key(principal, record)

    async def enable(self, principal: Principal, request: pb.KeyRef) -> pb.Key:
        record = await self._services.keys.enable(principal, _ref(request.id_or_hash))
        return await self._key(principal, record)

    async def revoke(self, principal: Principal, request: pb.RevokeKeyRequest) -> pb.Key:
        body = KeyRevoke.model_validate(convert.present(request, ("reason",)))
        record = await self._services.keys.revoke(principal, _ref(request.id_or_hash), body.reason)
        return await self._key(principal, record)

    # -- verify ---------------------------------------------------------------------------

    async def verify(self, principal: Principal, request: pb.VerifyRequest) -> pb.VerifyResponse:
        require_scope(principal, "verify")
        body = VerifyBody.model_validate(convert.verify_fields(request))
        verdict = await self._services.verifier.verify(principal, service_request(body))
        return convert.verdict_message(verdict)


def _invalid(field: str, rule: str) -> ValidationError:
    return ValidationError(f"{field}: {rule}", errors=[{"loc": field, "msg": rule}])


def _text(field: str, value: str, limit: int) -> str:
    if not value or len(value) > limit or not value.isprintable():
        raise _invalid(field, f"1-{limit} printable characters")
    return value


def _ref(value: str) -> str:
    # As REST: what is neither a key id nor a hash cannot exist, a 404 without a query.
    return check_key_ref(_text("id_or_hash", value, _MAX_REF))


def _enum(kind: Any, field: str, request: Message, name: str) -> Any:
    if not request.HasField(name):
        return None
    value = getattr(request, name)
    try:
        return kind(value)
    except ValueError:
        raise _invalid(field, "one of " + ", ".join(item.value for item in kind)) from None
