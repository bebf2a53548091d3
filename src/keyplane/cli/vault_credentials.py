"""``keyplane vault add | list | show | update | delete | stats | import``.

Operator commands over the vault's credentials, straight against the database (like
``keyplane migrate``), acting as the organization's root: for a first setup, scripts and
break-glass work. They use the same service as the API (same validation, same sealing), and
print what the API returns for list and get (``--json``), so never a secret: a secret is read
from a hidden prompt, standard input or an environment variable, never from the command
line, where shell history and ``ps`` would keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keyplane.domain.clock import SystemClock
from keyplane.domain.tenancy import Principal
from keyplane.domain.vault import CredentialStatus
from keyplane.errors import ConfigurationError, KeyplaneError, ValidationError
from keyplane.services.vault import (
    MAX_BULK,
    CredentialStats,
    NewCredential,
    VaultService,
    check_provider,
    metadata_filter,
)
from keyplane.settings import Settings
from keyplane.store.vault import CredentialFilter, SqlVaultStore

T = TypeVar("T")
#: Largest import file read, so a wrong path (a disk image, a log) fails fast.
MAX_IMPORT_BYTES = 50 * 1024 * 1024
_UNLIMITED = {"none", "null", "unlimited"}

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides KEYPLANE_DATABASE_URL.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, as the API answers.")]
Limit = Annotated[
    str | None,
    typer.Option(help="A number, 0 to block, or 'none' for unlimited.", show_default=False),
]


def _err() -> Console:
    from keyplane.cli.main import err

    return err


def _settings(database_url: str | None) -> Settings:
    from keyplane.cli.main import _settings as load

    return load(database_url=database_url)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err().print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@contextlib.asynccontextmanager
async def _vault(settings: Settings) -> AsyncIterator[tuple[VaultService, Principal]]:
    from keyplane.store.migrate import migrate
    from keyplane.store.sql import SqlStore

    keyring = settings.vault_keyring()
    clock = SystemClock()
    store = SqlStore.from_url(settings.async_database_url, settings.database_schema)
    try:
        if settings.migrate_on_start:
            await migrate(store.engine, settings.database_schema)
        org, _ = await store.ensure_default_tenancy(clock.now())
        principal = Principal(
            key_id="cli", org_id=org.id, project_id=None, scopes=("*",), is_root=True
        )
        yield VaultService(SqlVaultStore(store), keyring, clock), principal
    finally:
        await store.close()


def _run(database_url: str | None, action: Callable[[VaultService, Principal], Awaitable[T]]) -> T:
    settings = _settings(database_url)

    async def go() -> T:
        async with _vault(settings) as (service, principal):
            return await action(service, principal)

    try:
        return asyncio.run(go())
    except ConfigurationError as exc:
        raise _fail(exc.message, 2) from None
    except KeyplaneError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"cannot reach the database: {exc}") from None


def _limit(name: str, text: str | None) -> int | None:
    if text is None or text.strip().lower() in _UNLIMITED:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _fail(f"{name} must be a whole number, 0 to block, or 'none'", 2) from None
    if value < 0:
        raise _fail(f"{name} must not be negative", 2)
    return value


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise _fail("--metadata must be a JSON object", 2) from None
    if not isinstance(value, dict):
        raise _fail("--metadata must be a JSON object", 2)
    return value


def _filters(pairs: list[str] | None) -> tuple[tuple[tuple[str, ...], str], ...]:
    given: dict[str, str] = {}
    for pair in pairs or []:
        path, sep, value = pair.partition("=")
        if not sep or not path:
            raise _fail(f"--metadata filters are path=value, got {pair[:60]!r}", 2)
        given[path] = value
    try:
        return metadata_filter(given)
    except ValidationError as exc:
        raise _fail(exc.message, 2) from None


def _read_secret(from_env: str | None, prompt: str = "Secret") -> str:
    """From the named environment variable, from standard input when it is not a terminal,
    else from a hidden prompt."""
    if from_env is not None:
        found = os.environ.get(from_env)
        if found is None:
            raise _fail(f"the environment variable {from_env} is not set", 2)
        return found
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    typed: str = typer.prompt(prompt, hide_input=True)
    return typed


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _out(stats: CredentialStats) -> dict[str, Any]:
    from keyplane.api.vault_schemas import CredentialOut

    return CredentialOut.of(stats).model_dump(mode="json")


def _remaining(value: int | None) -> str:
    return "∞" if value is None else f"{value:,}"


def _print_table(items: list[CredentialStats]) -> None:
    # Piped output has no terminal width; do not squeeze ids into ellipses then.
    Console(width=None if sys.stdout.isatty() else 200).print(_table(items))


def _table(items: list[CredentialStats]) -> Table:
    table = Table("id", "provider", "alias", "secret", "env", "status", "today", "month", "live")
    for item in items:
        r = item.record
        table.add_row(
            r.id,
            r.provider,
            escape(r.alias),
            escape(r.secret_hint),
            escape(r.environment or "-"),
            item.status.value,
            f"{item.daily_used:,}/{_remaining(r.daily_limit)}",
            f"{item.monthly_used:,}/{_remaining(r.monthly_limit)}",
            f"{item.live_leases}/{_remaining(r.max_concurrent)}",
        )
    return table


def add(
    provider: Annotated[str, typer.Argument(help="openai, anthropic, ... or custom.")],
    alias: Annotated[str, typer.Argument(help="A name for it, unique in your eyes.")],
    secret_env: Annotated[
        str | None,
        typer.Option(
            "--secret-env",
            help="Read the secret from this environment variable (else standard input, "
            "else a hidden prompt).",
            show_default=False,
        ),
    ] = None,
    environment: Annotated[str | None, typer.Option(show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeatable.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object.", show_default=False)] = None,
    weight: Annotated[int, typer.Option(min=0, help="For the weighted strategy.")] = 1,
    daily_limit: Limit = None,
    monthly_limit: Limit = None,
    max_concurrent: Limit = None,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Add one credential (its secret is sealed with the vault master key)."""
    new = NewCredential(
        provider=provider,
        alias=alias,
        secret=_read_secret(secret_env),
        environment=environment,
        tags=tuple(tag or ()),
        metadata=_metadata(metadata),
        weight=weight,
        daily_limit=_limit("--daily-limit", daily_limit),
        monthly_limit=_limit("--monthly-limit", monthly_limit),
        max_concurrent=_limit("--max-concurrent", max_concurrent),
    )

    async def action(service: VaultService, principal: Principal) -> CredentialStats:
        record = await service.add(principal, new)
        return service.stats_of(record, 0)

    stats = _run(database_url, action)
    if as_json:
        _dump(_out(stats))
        return
    record = stats.record
    typer.echo(f"added {record.id} ({record.provider}, {record.alias}, {record.secret_hint})")


def list_(
    provider: Annotated[str | None, typer.Option(show_default=False)] = None,
    environment: Annotated[str | None, typer.Option(show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="All must match.")] = None,
    status: Annotated[CredentialStatus | None, typer.Option(show_default=False)] = None,
    has_capacity: Annotated[
        bool | None,
        typer.Option(
            "--has-capacity/--no-capacity",
            help="Only those a lease could take now.",
            show_default=False,
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", help="path=value, e.g. billing.tier=enterprise. Repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """List credentials (secrets masked), with the API's filters."""
    try:
        filters = CredentialFilter(
            provider=None if provider is None else check_provider(provider),
            environment=environment,
            tags=tuple(tag or ()),
            metadata=_filters(metadata),
            status=status,
            has_capacity=has_capacity,
        )
    except ValidationError as exc:
        raise _fail(exc.message, 2) from None

    async def action(service: VaultService, principal: Principal) -> list[CredentialStats]:
        items = await service.list(principal, filters, None, limit)
        # cooling_down and active share a stored status; tell them apart by the time.
        return [item for item in items if status is None or item.status is status]

    items = _run(database_url, action)
    if as_json:
        _dump([_out(item) for item in items])
        return
    _print_table(items)


def show(
    credential_id: Annotated[str, typer.Argument(help="The credential's id.")],
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Show one credential and its usage (never its secret)."""
    stats = _run(database_url, lambda service, p: service.get(p, credential_id))
    data = _out(stats)
    if as_json:
        _dump(data)
        return
    for name, value in data.items():
        typer.echo(f"{name:>16}  {json.dumps(value) if isinstance(value, dict | list) else value}")


def update(
    credential_id: Annotated[str, typer.Argument(help="The credential's id.")],
    alias: Annotated[str | None, typer.Option(show_default=False)] = None,
    new_secret: Annotated[
        bool, typer.Option("--new-secret", help="Replace the secret (read like add's).")
    ] = False,
    secret_env: Annotated[
        str | None, typer.Option("--secret-env", show_default=False, help="With --new-secret.")
    ] = None,
    environment: Annotated[str | None, typer.Option(show_default=False)] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Replaces all tags. Repeatable.")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option(help="A JSON object; replaces it.", show_default=False)
    ] = None,
    weight: Annotated[int | None, typer.Option(min=0, show_default=False)] = None,
    daily_limit: Limit = None,
    monthly_limit: Limit = None,
    max_concurrent: Limit = None,
    enable: Annotated[
        bool | None,
        typer.Option(
            "--enable/--disable",
            help="Set active (ends a cool-down) or disabled.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Change a credential's fields; only those given change."""
    changes: dict[str, Any] = {}
    if alias is not None:
        changes["alias"] = alias
    if new_secret or secret_env is not None:
        changes["secret"] = _read_secret(secret_env, "New secret")
    if environment is not None:
        changes["environment"] = environment
    if tag is not None:
        changes["tags"] = tuple(tag)
    if metadata is not None:
        changes["metadata"] = _metadata(metadata)
    if weight is not None:
        changes["weight"] = weight
    for name, text in (
        ("daily_limit", daily_limit),
        ("monthly_limit", monthly_limit),
        ("max_concurrent", max_concurrent),
    ):
        if text is not None:
            changes[name] = _limit("--" + name.replace("_", "-"), text)
    if enable is not None:
        changes["status"] = CredentialStatus.ACTIVE if enable else CredentialStatus.DISABLED
    if not changes:
        raise _fail("nothing to change: give at least one option", 2)
    stats = _run(database_url, lambda service, p: service.update(p, credential_id, changes))
    if as_json:
        _dump(_out(stats))
        return
    typer.echo(f"updated {stats.record.id} ({stats.status.value})")


def delete(
    credential_id: Annotated[str, typer.Argument(help="The credential's id.")],
    hard: Annotated[
        bool, typer.Option("--hard", help="Erase the record instead of revoking it.")
    ] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a credential (the record stays), or erase it with --hard."""
    record = _run(database_url, lambda service, p: service.delete(p, credential_id, hard=hard))
    typer.echo(f"{'erased' if hard else 'revoked'} {record.id} ({record.alias})")


def stats(
    provider: Annotated[str, typer.Argument(help="The provider to total.")],
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Usage of a provider's credentials today and this month, used and remaining."""
    from keyplane.api.vault_schemas import ProviderStatsOut

    totals = _run(database_url, lambda service, p: service.provider_stats(p, provider))
    if as_json:
        _dump(ProviderStatsOut.of(totals).model_dump(mode="json"))
        return
    _print_table(totals.items)
    typer.echo(
        f"{totals.provider}: {totals.credentials} credentials, {totals.with_capacity} with "
        f"capacity, {totals.live_leases} live leases; today {totals.daily_used:,} used, "
        f"{_remaining(totals.daily_remaining)} left; this month {totals.monthly_used:,} "
        f"used, {_remaining(totals.monthly_remaining)} left"
    )


def import_(
    path: Annotated[
        Path,
        typer.Argument(
            help="JSON: a list of credentials as the API takes them, "
            "{'credentials': [...]}, or one object per line. '-' reads stdin."
        ),
    ],
    database_url: DatabaseOption = None,
) -> None:
    """Add many credentials from a file, in all-or-nothing batches of 100."""
    items = [_new_from(index, item) for index, item in enumerate(_load(path))]
    if not items:
        raise _fail("the file holds no credentials", 2)

    async def action(service: VaultService, principal: Principal) -> int:
        added = 0
        for start in range(0, len(items), MAX_BULK):
            try:
                added += len(await service.add_many(principal, items[start : start + MAX_BULK]))
            except KeyplaneError as exc:
                exc.message = (
                    f"{exc.message} (in the batch starting at item {start}; "
                    f"{added} added before it)"
                )
                raise
        return added

    added = _run(database_url, action)
    typer.echo(f"imported {added} credentials")


def _load(path: Path) -> list[Any]:
    try:
        if str(path) == "-":
            raw = sys.stdin.buffer.read(MAX_IMPORT_BYTES + 1)
        else:
            with path.open("rb") as handle:
                raw = handle.read(MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror or exc}", 2) from None
    if len(raw) > MAX_IMPORT_BYTES:
        raise _fail(f"{path} is over {MAX_IMPORT_BYTES // (1024 * 1024)} MiB", 2)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(f"{path} is not UTF-8 text", 2) from None
    try:
        data = json.loads(text)
    except ValueError:
        # One JSON object per line.
        data = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except ValueError:
                # Not the line: it may hold a secret.
                raise _fail(f"{path}: line {number} is not JSON", 2) from None
    if isinstance(data, dict):
        data = data.get("credentials")
    if not isinstance(data, list):
        raise _fail(f"{path}: expected a list of credentials", 2)
    return data


_FIELDS = {
    "provider",
    "alias",
    "secret",
    "environment",
    "tags",
    "metadata",
    "weight",
    "daily_limit",
    "monthly_limit",
    "max_concurrent",
}


def _new_from(index: int, item: Any) -> NewCredential:
    """One entry of an import file, checked for shape here and for content by the service."""
    where = f"item {index}"
    if not isinstance(item, dict):
        raise _fail(f"{where}: expected an object", 2)
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise _fail(f"{where}: unknown fields {', '.join(map(repr, unknown))[:200]}", 2)
    for name in ("provider", "alias", "secret"):
        if not isinstance(item.get(name), str):
            raise _fail(f"{where}: {name} is required and must be a string", 2)
    if item.get("environment") is not None and not isinstance(item["environment"], str):
        raise _fail(f"{where}: environment must be a string", 2)
    tags = item.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _fail(f"{where}: tags must be a list of strings", 2)
    metadata = item.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _fail(f"{where}: metadata must be an object", 2)
    numbers: dict[str, int | None] = {}
    for name in ("weight", "daily_limit", "monthly_limit", "max_concurrent"):
        value = item.get(name, 1 if name == "weight" else None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _fail(f"{where}: {name} must be a whole number or null", 2)
        numbers[name] = value
    weight = numbers.pop("weight")
    if weight is None:
        raise _fail(f"{where}: weight must be a whole number", 2)
    return NewCredential(
        provider=item["provider"],
        alias=item["alias"],
        secret=item["secret"],
        environment=item.get("environment"),
        tags=tuple(tags),
        metadata=metadata,
        weight=weight,
        **numbers,
    )


def register(app: typer.Typer) -> None:
    """Add these commands to the ``keyplane vault`` sub-app."""
    app.command("add")(add)
    app.command("list")(list_)
    app.command("show")(show)
    app.command("update")(update)
    app.command("delete")(delete)
    app.command("stats")(stats)
    app.command("import")(import_)
