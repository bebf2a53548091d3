"""Projects: groups of keys within an organization, each with its own key prefix; and the
organization's aliases (external ids, such as a FastRouter ``org_id``, that name it)."""

from __future__ import annotations

import builtins
import re

from keyplane.domain import ids, keyformat
from keyplane.domain.changes import Journal
from keyplane.domain.clock import Clock
from keyplane.domain.tenancy import Principal, Project
from keyplane.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from keyplane.services.authz import require_scope
from keyplane.services.compat import find_project, project_names
from keyplane.store.base import TenancyStore
from keyplane.store.tenancy import record_project

#: An alias: printable ASCII without spaces, as external ids are (``org_2f9c``, ``acme.io``).
ALIAS_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}", re.ASCII)
MAX_ALIASES = 100


class Projects:
    """Projects and organization aliases.

    Args:
        create_missing: a key-creating compat request (``/prod/createServiceKey``) that names
            a project that does not exist creates it (``KEYPLANE_COMPAT_CREATE_PROJECTS``);
            off, it is ``404 PROJECT_NOT_FOUND``.
    """

    def __init__(self, store: TenancyStore, clock: Clock, *, create_missing: bool = False) -> None:
        self._store = store
        self._clock = clock
        self.create_missing = create_missing

    async def create(self, principal: Principal, name: str, key_prefix: str) -> Project:
        require_scope(principal, "projects:write")
        if principal.project_id is not None:
            raise PermissionDeniedError("a project-bound key cannot create projects")
        if not keyformat.is_valid_prefix(key_prefix):
            raise ValidationError(
                "key_prefix must match [a-z][a-z0-9_-]{0,15}", code="INVALID_PREFIX"
            )
        now = self._clock.now()
        project = Project(ids.new_id("proj"), principal.org_id, name, key_prefix, now)
        journal = Journal(principal.actor, now)
        record_project(journal, project)
        return await self._store.create_project(project, journal)

    async def get(self, principal: Principal, project_id: str) -> Project:
        require_scope(principal, "projects:read")
        project = await self._store.get_project(principal.org_id, project_id)
        if project is None or not principal.reaches_project(project.id):
            raise NotFoundError(f"no project {project_id!r}", code="PROJECT_NOT_FOUND")
        return project

    async def list(self, principal: Principal) -> list[Project]:
        require_scope(principal, "projects:read")
        return [
            p
            for p in await self._store.list_projects(principal.org_id)
            if principal.reaches_project(p.id)
        ]

    async def names(self, principal: Principal) -> dict[str, str]:
        """Names by id of the caller's organization's projects, to show next to its keys.

        Part of answering a key read (the compatibility surfaces show a key's project name),
        so it needs no scope beyond the read it accompanies; it never leaves the caller's org.
        """
        return await project_names(self._store, principal.org_id)

    async def named_in_request(
        self,
        principal: Principal,
        default: Project,
        project_id: str | None,
        project_name: str | None,
    ) -> Project:
        """The project a key-creating request names, within the caller's reach (see
        :func:`keyplane.services.compat.find_project`).

        With ``create_missing``, a project that does not exist is created, named
        ``project_name`` (or ``project_id`` when only that is given, so the same request
        finds it next time), for callers that may create projects (``projects:write``,
        organization-wide).
        """
        name = project_name
        if name is None and self.create_missing:
            name = project_id
        try:
            return await find_project(self._store, principal, default, project_id, name)
        except NotFoundError:
            if not self.create_missing or name is None:
                raise
        try:
            return await self.create(principal, name, prefix_for(name))
        except ConflictError:
            # Created meanwhile by a concurrent request (names are unique per org).
            return await find_project(self._store, principal, default, None, name)

    # -- organization aliases ---------------------------------------------------------------

    async def aliases(self, principal: Principal) -> builtins.list[str]:
        """The caller's organization's aliases."""
        require_scope(principal, "projects:read")
        return await self._store.org_aliases(principal.org_id)

    async def add_alias(self, principal: Principal, alias: str) -> builtins.list[str]:
        """Let ``alias`` name the caller's organization; returns its aliases."""
        _require_org_writer(principal)
        _check_alias(alias)
        current = await self._store.org_aliases(principal.org_id)
        if alias not in current and len(current) >= MAX_ALIASES:
            raise ValidationError(f"an organization has at most {MAX_ALIASES} aliases")
        await self._store.add_org_alias(principal.org_id, alias, self._clock.now())
        return await self._store.org_aliases(principal.org_id)

    async def remove_alias(self, principal: Principal, alias: str) -> None:
        _require_org_writer(principal)
        if not await self._store.remove_org_alias(principal.org_id, alias[:200]):
            raise NotFoundError("no such alias", code="ALIAS_NOT_FOUND")

    async def names_own_org(self, principal: Principal, org_ref: str) -> bool:
        """Whether ``org_ref`` is the caller's organization's id or one of its aliases.

        Part of checking the request it comes with, so it needs no scope of its own.
        """
        if org_ref == principal.org_id:
            return True
        if not ALIAS_PATTERN.fullmatch(org_ref):
            return False
        return await self._store.org_of_alias(org_ref) == principal.org_id


def _require_org_writer(principal: Principal) -> None:
    require_scope(principal, "projects:write")
    if principal.project_id is not None:
        raise PermissionDeniedError("a project-bound key cannot change the organization")


def _check_alias(alias: str) -> None:
    if not ALIAS_PATTERN.fullmatch(alias):
        raise ValidationError(
            "an alias is 1-200 letters, digits and . _ : @ - (starting with a letter or digit)",
            code="INVALID_ALIAS",
        )
    if ids.looks_like_id(alias, "org"):
        raise ValidationError(
            "an alias cannot look like a Keyplane organization id", code="INVALID_ALIAS"
        )


def prefix_for(name: str) -> str:
    """A key prefix for a project created from its name alone: ``Production`` -> ``production``."""
    words = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    prefix = words[:16].rstrip("_-")
    if not prefix[:1].isalpha():
        prefix = ("p_" + prefix)[:16].rstrip("_-")
    return prefix if keyformat.is_valid_prefix(prefix) else keyformat.DEFAULT_PREFIX
