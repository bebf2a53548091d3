"""Use cases the compatibility surfaces need beyond the native ones: offset paging over
live keys, and finding a project by id or name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyplane.domain.keys import KeyRecord, KeyStatus, effective_status
from keyplane.domain.tenancy import Principal, Project
from keyplane.errors import NotFoundError, PermissionDeniedError
from keyplane.services.keys import KeyService
from keyplane.store.base import KeyFilter, TenancyStore

#: Rows fetched per store query while skipping to an offset.
_BATCH = 500
#: Reaching an offset reads every row before it (the store pages by cursor), so it is capped.
MAX_OFFSET = 100_000


@dataclass(frozen=True, slots=True)
class LivePage:
    records: list[KeyRecord]
    has_more: bool


async def live_keys_page(
    keys: KeyService,
    principal: Principal,
    *,
    now: datetime,
    include_disabled: bool,
    include_revoked: bool = False,
    offset: int,
    size: int,
    project_id: str | None = None,
    tags: tuple[str, ...] = (),
) -> LivePage:
    """Keys in creation order from ``offset``, without revoked ("deleted" to these APIs)
    keys unless ``include_revoked``, nor disabled ones unless ``include_disabled``; with
    ``tags``, only keys carrying every one of them.

    The store pages by cursor; an offset is reached by walking batches, which costs
    O(offset) rows read.
    """
    skipped = 0
    page: list[KeyRecord] = []
    after: str | None = None
    filters = KeyFilter(project_id=project_id)
    while True:
        # Ask for no more rows than could still be needed (plus one, to know if more follow).
        wanted = min(_BATCH, offset - skipped + size - len(page) + 1)
        batch = await keys.list(principal, filters, after, wanted)
        for record in batch:
            status = effective_status(record, now)
            if (status is KeyStatus.REVOKED and not include_revoked) or (
                status is KeyStatus.DISABLED and not include_disabled
            ):
                continue
            if tags and not set(tags) <= set(record.tags):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if len(page) == size:
                return LivePage(page, has_more=True)
            page.append(record)
        if len(batch) < wanted:
            return LivePage(page, has_more=False)
        after = batch[-1].id


async def find_project(
    store: TenancyStore,
    principal: Principal,
    default: Project,
    project_id: str | None,
    project_name: str | None,
) -> Project:
    """The project a request names: by id first, else by exact name; the default when neither.

    Nothing is created implicitly: a mistyped name must not mint a project (with its own key
    prefix) behind the operator's back, so an unknown project is a NotFoundError.
    """
    if project_id is None and project_name is None:
        wanted = principal.project_id or default.id
        return default if wanted == default.id else await _by_id(store, principal, wanted)
    projects = await store.list_projects(principal.org_id)
    found = None
    if project_id is not None:
        found = next((p for p in projects if p.id == project_id), None)
    if found is None and project_name is not None:
        found = next((p for p in projects if p.name == project_name), None)
    if found is None:
        raise NotFoundError("no such project", code="PROJECT_NOT_FOUND")
    if not principal.reaches_project(found.id):
        raise PermissionDeniedError("this management key cannot reach that project")
    return found


async def _by_id(store: TenancyStore, principal: Principal, project_id: str) -> Project:
    project = await store.get_project(principal.org_id, project_id)
    if project is None:
        raise NotFoundError("no such project", code="PROJECT_NOT_FOUND")
    return project


async def project_names(store: TenancyStore, org_id: str) -> dict[str, str]:
    """Project names by id, to show next to keys."""
    return {project.id: project.name for project in await store.list_projects(org_id)}
