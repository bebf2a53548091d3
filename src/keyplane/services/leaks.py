"""Leak response: what happens when a key's secret is reported public.

Two doors: GitHub's secret scanning partner program (``github_report``: the request's ECDSA
signature is the credential, no management key) and an operator's own report
(``operator_report``, scope ``keys:leaked``). Either way each token is recognised by its
format and checksum before any lookup, found by its keyed hash, labelled, and the key's
project's action applied (``revoke`` by default, ``disable``, ``rotate``, ``notify``) in one
transaction with its audit entries and the ``security.key_leaked`` event, which says where
the token was found and never holds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from keyplane.domain import keyformat
from keyplane.domain.changes import SYSTEM, Actor, Journal
from keyplane.domain.clock import Clock
from keyplane.domain.crypto import key_digest
from keyplane.domain.keys import KeyRecord, KeyStatus
from keyplane.domain.leaks import (
    DEFAULT_ACTION,
    MAX_IDENTIFIER_LENGTH,
    MAX_SIGNATURE_LENGTH,
    Label,
    LeakAction,
    ReportedToken,
    TokenLabel,
    parse_reports,
    signature_valid,
    token_hash,
)
from keyplane.domain.tenancy import Principal
from keyplane.errors import AuthenticationError, NotFoundError, ValidationError
from keyplane.services.authz import require_scope
from keyplane.services.directory import KeyDirectory
from keyplane.store.keys import KeyStore
from keyplane.store.leaks import LeakResponseStore
from keyplane.store.tenancy import TenancyStore

REPORT_SCOPE = "keys:leaked"
EVENT = "security.key_leaked"
SETTING_CHANGED = "project.leak_response.updated"


class Rotator(Protocol):
    """The rotation service (``services/rotation.py``, wired at merge): gives a key a new
    secret held encrypted until its owner claims it; the old one works for ``grace``."""

    async def rotate_automatically(
        self, org_id: str, key_id: str, grace: timedelta, reason: str
    ) -> Any: ...


class JournalRecorder(Protocol):
    async def record_alone(self, journal: Journal) -> None: ...


class LeakResponse:
    def __init__(
        self,
        keys: KeyStore,
        responses: LeakResponseStore,
        tenancy: TenancyStore,
        audit: JournalRecorder,
        directory: KeyDirectory,
        clock: Clock,
        server_secret: bytes,
        public_keys: Mapping[str, EllipticCurvePublicKey],
        *,
        rotator: Rotator | None = None,
        rotate_grace: timedelta = timedelta(hours=1),
    ) -> None:
        self._keys = keys
        self._responses = responses
        self._tenancy = tenancy
        self._audit = audit
        self._directory = directory
        self._clock = clock
        self._server_secret = server_secret
        self._public_keys = dict(public_keys)
        self.rotator = rotator
        self._rotate_grace = rotate_grace

    # -- the setting -------------------------------------------------------------------------

    async def action_for(self, principal: Principal, project_id: str) -> LeakAction:
        require_scope(principal, "projects:read")
        await self._project(principal, project_id)
        return await self._responses.action(project_id) or DEFAULT_ACTION

    async def set_action(
        self, principal: Principal, project_id: str, action: LeakAction
    ) -> LeakAction:
        require_scope(principal, "projects:write")
        if action is LeakAction.ROTATE and self.rotator is None:
            raise ValidationError(
                "rotate needs the rotation service, which this server does not run",
                code="ROTATION_UNAVAILABLE",
            )
        project = await self._project(principal, project_id)
        now = self._clock.now()
        journal = Journal(principal.actor, now)
        journal.record(
            SETTING_CHANGED,
            org_id=project.org_id,
            target_type="project",
            target_id=project.id,
            project_id=project.id,
            details={"leak_action": action},
        )
        await self._responses.set_action(project.org_id, project.id, action, now, journal)
        return action

    async def _project(self, principal: Principal, project_id: str) -> Any:
        project = await self._tenancy.get_project(principal.org_id, project_id)
        if project is None or not principal.reaches_project(project_id):
            raise NotFoundError(f"no project {project_id!r}", code="PROJECT_NOT_FOUND")
        return project

    # -- reports -----------------------------------------------------------------------------

    async def github_report(
        self, identifier: str | None, signature: str | None, body: bytes
    ) -> list[TokenLabel]:
        """Check GitHub's signature over the raw ``body``, then label and act on each token.

        AuthenticationError (401) for a missing, unknown or forged signature, before the body
        is even parsed; ValidationError for a body that is not a bounded report.
        """
        if not identifier or not signature:
            raise AuthenticationError(
                "Github-Public-Key-Identifier and Github-Public-Key-Signature are required",
                code="SIGNATURE_MISSING",
            )
        if len(identifier) > MAX_IDENTIFIER_LENGTH or len(signature) > MAX_SIGNATURE_LENGTH:
            raise AuthenticationError(
                "the signature headers are too long", code="SIGNATURE_INVALID"
            )
        valid = signature_valid(self._public_keys, identifier, signature, body)
        if valid is None:
            raise AuthenticationError(
                "unknown Github-Public-Key-Identifier", code="UNKNOWN_KEY_IDENTIFIER"
            )
        if not valid:
            raise AuthenticationError("the signature does not match", code="SIGNATURE_INVALID")
        reports = _parsed(body)
        return await self._respond(reports, SYSTEM, "github", None)

    async def operator_report(self, principal: Principal, body: bytes) -> list[TokenLabel]:
        """An operator's report, in the same format: only keys the caller reaches count (the
        others are labelled ``false_positive``, as unknown tokens are: nothing tells another
        tenant's keys apart). Audited with the caller as the actor."""
        require_scope(principal, REPORT_SCOPE)
        return await self._respond(_parsed(body), principal.actor, "operator", principal)

    async def _respond(
        self,
        reports: list[ReportedToken],
        actor: Actor,
        reporter: str,
        principal: Principal | None,
    ) -> list[TokenLabel]:
        labels = []
        handled: set[str] = set()
        for report in reports:
            found = await self._recognise(report.token, principal)
            label = Label.FALSE_POSITIVE if found is None else Label.TRUE_POSITIVE
            labels.append(TokenLabel(token_hash(report.token), report.type, label))
            if found is not None and found[0].id not in handled:
                handled.add(found[0].id)  # one action per key, however often it is reported
                await self._act(found[0], report, actor, reporter, still_works=found[1])
        return labels

    async def _recognise(
        self, token: str, principal: Principal | None
    ) -> tuple[KeyRecord, bool] | None:
        """The key a token is a secret of, and whether that secret still verifies."""
        parsed = keyformat.parse(token)
        if parsed is None or not parsed.kind.is_api_key:
            return None  # not a Keyplane key (format or checksum): no lookup at all
        match = await self._keys.find_by_secret(key_digest(self._server_secret, token))
        if match is None:
            return None
        record = match.record
        if principal is not None and (
            record.org_id != principal.org_id or not principal.reaches_project(record.project_id)
        ):
            return None
        expired = match.valid_until is not None and match.valid_until <= self._clock.now()
        return record, not expired

    async def _act(
        self,
        record: KeyRecord,
        report: ReportedToken,
        actor: Actor,
        reporter: str,
        *,
        still_works: bool,
    ) -> None:
        action = await self._responses.action(record.project_id) or DEFAULT_ACTION
        if not still_works:
            # A secret rotated out whose grace has ended opens nothing: punishing the key's
            # current secret would only break its owner. The event still tells the operator.
            action = LeakAction.NOTIFY
        if action is LeakAction.ROTATE and self.rotator is None:
            action = LeakAction.REVOKE  # never leave a leaked key working for want of a service
        now = self._clock.now()
        journal = Journal(actor, now)
        reason = f"leaked: reported by {reporter}"
        details = {
            "name": record.name,
            "start": record.start,
            "end": record.end,
            "reporter": reporter,
            "type": report.type,
            "url": report.url,
            "source": report.source,
            "action": action,
        }

        def leaked(current: KeyRecord) -> None:
            journal.record(
                EVENT,
                org_id=current.org_id,
                target_type="key",
                target_id=current.id,
                project_id=current.project_id,
                details=details,
            )

        if action in (LeakAction.REVOKE, LeakAction.DISABLE):

            def apply(current: KeyRecord) -> KeyRecord:
                leaked(current)
                if current.status is KeyStatus.REVOKED or (
                    action is LeakAction.DISABLE
                    and current.status is KeyStatus.DISABLED
                    and current.auto_enable_at is None  # else: it would wake up, still leaked
                ):
                    return current  # already stopped for good: the event alone is recorded
                if action is LeakAction.REVOKE:
                    journal.record_key("key.revoked", current, {"reason": reason})
                    return dataclasses.replace(
                        current,
                        status=KeyStatus.REVOKED,
                        revoked_reason=reason,
                        revoked_at=now,
                        updated_at=now,
                    )
                journal.record_key("key.disabled", current, {"reason": reason})
                return dataclasses.replace(
                    current,
                    status=KeyStatus.DISABLED,
                    disabled_reason=reason,
                    auto_enable_at=None,
                    updated_at=now,
                )

            await self._keys.mutate(record.org_id, record.id, apply, journal)
            await self._directory.invalidate(record.id)
            return
        if action is LeakAction.ROTATE and self.rotator is not None:
            await self.rotator.rotate_automatically(
                record.org_id, record.id, self._rotate_grace, reason
            )
        leaked(record)
        await self._audit.record_alone(journal)


def _parsed(body: bytes) -> list[ReportedToken]:
    try:
        return parse_reports(body)
    except ValueError as exc:
        raise ValidationError(str(exc), code="INVALID_REPORT") from None
