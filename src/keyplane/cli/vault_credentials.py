"""``keyplane vault add | list | show | update | delete | stats``: the vault's credentials on a
server, through the SDK, like the other remote commands (``--url``, ``--key``, ``--json``, the
exit codes of :mod:`keyplane.cli.remote`). ``import`` is in :mod:`keyplane.cli.vault_import`.

A secret is never a command-line argument, where shell history and ``ps`` would keep it: it is
read from the environment variable ``--secret-env`` names, else from standard input when that
is not a terminal, else from a hidden prompt. Nothing printed holds a secret: the server
answers with a hint of it only.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from keyplane.cli.remote import (
    JsonOption,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    fields,
    parse_json_option,
    print_json,
    table,
    usage_error,
)
from keyplane.client import Credential, CredentialStats, ProviderStats

#: The most credentials ``list`` fetches (pages of 100), so a typo cannot page forever.
MAX_LIST = 10_000
_UNLIMITED = {"none", "null", "unlimited"}
STATUSES = ("active", "cooling_down", "disabled", "revoked")

IdArgument = Annotated[str, typer.Argument(help="The credential's id (cred_...).")]
#: ``org`` on update: make it org-wide again.
ORG_WIDE = "org"
Limit = Annotated[
    str | None,
    typer.Option(help="A whole number, 0 to block, or 'none' for unlimited.", show_default=False),
]
SecretEnv = Annotated[
    str | None,
    typer.Option(
        "--secret-env",
        help="Read the secret from this environment variable (else standard input when it is "
        "not a terminal, else a hidden prompt).",
        show_default=False,
    ),
]
Environment = Annotated[
    str | None, typer.Option(help="e.g. production (lower case).", show_default=False)
]
Metadata = Annotated[
    str | None, typer.Option(help="A JSON object, or @file.json.", show_default=False)
]


def read_secret(from_env: str | None, prompt: str = "Secret") -> str:
    """The secret, from the named variable, from stdin when piped, else a hidden prompt."""
    if from_env is not None:
        found = os.environ.get(from_env)
        if found is None:
            usage_error(f"the environment variable {from_env} is not set")
        secret = found
    elif not sys.stdin.isatty():
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = typer.prompt(prompt, hide_input=True)
    if not secret.strip():
        usage_error("the secret is empty")
    return secret


def parse_limit(name: str, text: str) -> int | None:
    """A limit option: a whole number >= 0, or None (unlimited) for 'none'."""
    if text.strip().lower() in _UNLIMITED:
        return None
    try:
        value = int(text)
    except ValueError:
        usage_error(f"{name} must be a whole number, 0 to block, or 'none'")
    if value < 0:
        usage_error(f"{name} must not be negative")
    return value


def _metadata(text: str | None) -> dict[str, Any] | None:
    value = parse_json_option("--metadata", text)
    if value is not None and not isinstance(value, dict):
        usage_error("--metadata must be a JSON object")
    return value


def _limits(**given: str | None) -> dict[str, int | None]:
    return {
        name: parse_limit("--" + name.replace("_", "-"), text)
        for name, text in given.items()
        if text is not None
    }


def _of(value: int | None) -> str:
    return "∞" if value is None else f"{value:,}"


def _rows(items: list[Credential]) -> list[tuple[Any, ...]]:
    return [
        (
            c.id,
            c.provider,
            c.alias,
            c.status,
            f"{c.usage.daily_used:,}/{_of(c.daily_limit)}",
            f"{c.usage.live_leases}/{_of(c.max_concurrent)}",
        )
        for c in items
    ]


#: Few enough for 80 columns; ``show`` and ``--json`` have the rest.
CREDENTIAL_COLUMNS = ("id", "provider", "alias", "status", "today", "live")


def _show(credential: Credential, as_json: bool) -> None:
    if as_json:
        print_json(credential)
        return
    c = credential
    fields(
        [
            ("id", c.id),
            ("provider", c.provider),
            ("alias", c.alias),
            ("secret", c.secret_hint),
            ("environment", c.environment),
            ("tags", c.tags),
            ("metadata", c.metadata),
            ("weight", c.weight),
            ("project", c.project_id or "org-wide"),
            ("shared with projects", c.shared_with_projects),
            ("status", c.status),
            ("status reason", c.status_reason),
            ("cooldown until", c.cooldown_until),
            ("has capacity", c.has_capacity),
            ("today", f"{c.usage.daily_used:,} of {_of(c.daily_limit)}"),
            ("this month", f"{c.usage.monthly_used:,} of {_of(c.monthly_limit)}"),
            ("live leases", f"{c.usage.live_leases} of {_of(c.max_concurrent)}"),
            ("leases in all", c.usage.total),
            ("master key id", c.master_key_id),
            ("created at", c.created_at),
            ("updated at", c.updated_at),
            ("last used at", c.last_used_at),
            ("revoked at", c.revoked_at),
        ]
    )


def add(
    provider: Annotated[str, typer.Argument(help="openai, anthropic, ... or custom.")],
    alias: Annotated[str, typer.Argument(help="A name for it.")],
    secret_env: SecretEnv = None,
    environment: Environment = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeatable.")] = None,
    metadata: Metadata = None,
    weight: Annotated[int, typer.Option(min=0, help="For the weighted strategy.")] = 1,
    daily_limit: Limit = None,
    monthly_limit: Limit = None,
    max_concurrent: Limit = None,
    project: Annotated[
        str | None,
        typer.Option(help="The project it belongs to (default: the whole organization)."),
    ] = None,
    shared: Annotated[
        bool,
        typer.Option(
            "--share-with-projects",
            help="Org-wide: let project-bound management keys list and lease it too.",
        ),
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Add one credential; the server seals its secret with the vault master key."""
    given: dict[str, Any] = {"weight": weight}
    if project is not None:
        given["project_id"] = project
    if shared:
        given["shared_with_projects"] = True
    given.update(
        _limits(daily_limit=daily_limit, monthly_limit=monthly_limit, max_concurrent=max_concurrent)
    )
    if environment is not None:
        given["environment"] = environment
    if tag:
        given["tags"] = tag
    parsed = _metadata(metadata)
    if parsed is not None:
        given["metadata"] = parsed
    secret = read_secret(secret_env)
    with connect(url, key, timeout) as client:
        created = client.vault.create(provider, alias, secret, **given)
    if as_json:
        print_json(created)
    else:
        typer.echo(
            f"added {created.id} ({created.provider}, {created.alias}, {created.secret_hint})"
        )


def list_credentials(
    provider: Annotated[str | None, typer.Option(show_default=False)] = None,
    environment: Annotated[str | None, typer.Option(show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="All must match.")] = None,
    status: Annotated[
        str | None, typer.Option(help=", ".join(STATUSES) + ".", show_default=False)
    ] = None,
    has_capacity: Annotated[
        bool | None,
        typer.Option(
            "--has-capacity/--no-capacity",
            help="Only those a lease could (not) take now.",
            show_default=False,
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", help="path=value, e.g. billing.tier=enterprise. Repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST, help="At most this many.")] = 1000,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List credentials (secrets masked), with the API's filters."""
    filters: dict[str, Any] = {}
    for name, value in (("provider", provider), ("environment", environment), ("status", status)):
        if value is not None:
            filters[name] = value
    if status is not None and status not in STATUSES:
        usage_error(f"--status must be one of {', '.join(STATUSES)}")
    if tag:
        filters["tags"] = tag
    if has_capacity is not None:
        filters["has_capacity"] = has_capacity
    if metadata:
        pairs: dict[str, str] = {}
        for pair in metadata:
            path, sep, value = pair.partition("=")
            if not sep or not path:
                usage_error("--metadata filters are path=value, e.g. billing.tier=enterprise")
            pairs[path] = value
        filters["metadata"] = pairs
    found: list[Credential] = []
    with connect(url, key, timeout) as client:
        for credential in client.vault.iterate(page_size=min(100, limit), **filters):
            found.append(credential)
            if len(found) >= limit:
                break
    if as_json:
        print_json({"data": found})
        return
    table(CREDENTIAL_COLUMNS, _rows(found), title=f"{len(found)} credential(s)")


def show(
    credential_id: IdArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one credential and its usage (never its secret)."""
    with connect(url, key, timeout) as client:
        found = client.vault.get(credential_id)
    _show(found, as_json)


def update(
    credential_id: IdArgument,
    alias: Annotated[str | None, typer.Option(show_default=False)] = None,
    new_secret: Annotated[
        bool, typer.Option("--new-secret", help="Replace the secret (read as add reads it).")
    ] = False,
    secret_env: SecretEnv = None,
    environment: Environment = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Replaces all tags. Repeatable.")
    ] = None,
    metadata: Metadata = None,
    weight: Annotated[int | None, typer.Option(min=0, show_default=False)] = None,
    daily_limit: Limit = None,
    monthly_limit: Limit = None,
    max_concurrent: Limit = None,
    enable: Annotated[
        bool | None,
        typer.Option(
            "--enable/--disable",
            help="Set active (also ends a cool-down) or disabled.",
            show_default=False,
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            help=f"Move it to this project; '{ORG_WIDE}' makes it org-wide.", show_default=False
        ),
    ] = None,
    shared: Annotated[
        bool | None,
        typer.Option(
            "--share-with-projects/--unshare",
            help="Org-wide ones: whether project-bound management keys may use it.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Change a credential; only the options given change."""
    changes: dict[str, Any] = {}
    if alias is not None:
        changes["alias"] = alias
    if environment is not None:
        changes["environment"] = environment
    if tag is not None:
        changes["tags"] = tag
    parsed = _metadata(metadata)
    if parsed is not None:
        changes["metadata"] = parsed
    if weight is not None:
        changes["weight"] = weight
    changes.update(
        _limits(daily_limit=daily_limit, monthly_limit=monthly_limit, max_concurrent=max_concurrent)
    )
    if enable is not None:
        changes["status"] = "active" if enable else "disabled"
    if project is not None:
        changes["project_id"] = None if project == ORG_WIDE else project
    if shared is not None:
        changes["shared_with_projects"] = shared
    if new_secret or secret_env is not None:
        changes["secret"] = read_secret(secret_env, "New secret")
    if not changes:
        usage_error("nothing to change: give at least one option")
    with connect(url, key, timeout) as client:
        updated = client.vault.update(credential_id, **changes)
    if as_json:
        print_json(updated)
    else:
        typer.echo(f"updated {updated.id} ({updated.status})")


def delete(
    credential_id: IdArgument,
    hard: Annotated[
        bool, typer.Option("--hard", help="Erase the record instead of revoking it.")
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Revoke a credential (the record stays, masked), or erase it with --hard."""
    with connect(url, key, timeout) as client:
        deleted = client.vault.delete(credential_id, hard=hard)
    if as_json:
        print_json(deleted)
    else:
        typer.echo(f"{'erased' if hard else 'revoked'} {deleted.id} ({deleted.alias})")


def _stats_rows(items: list[CredentialStats]) -> list[tuple[Any, ...]]:
    return [
        (
            s.id,
            s.alias,
            s.status,
            f"{s.usage.daily_used:,}/{_of(s.usage.daily_limit)}",
            f"{s.usage.monthly_used:,}/{_of(s.usage.monthly_limit)}",
            f"{s.usage.live_leases}/{_of(s.usage.max_concurrent)}",
        )
        for s in items
    ]


STATS_COLUMNS = ("id", "alias", "status", "today", "month", "live")


def stats(
    provider: Annotated[
        str | None, typer.Argument(help="The provider to total.", show_default=False)
    ] = None,
    credential: Annotated[
        str | None,
        typer.Option("--credential", help="One credential's stats instead.", show_default=False),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Use of a provider's credentials (or of one) today and this month, and what remains."""
    if (provider is None) == (credential is None):
        usage_error("give a provider, or --credential ID (not both)")
    with connect(url, key, timeout) as client:
        result: ProviderStats | CredentialStats = (
            client.vault.stats(credential)
            if credential is not None
            else client.vault.provider_stats(provider or "")
        )
    if as_json:
        print_json(result)
        return
    if isinstance(result, CredentialStats):
        table(STATS_COLUMNS, _stats_rows([result]))
        return
    table(STATS_COLUMNS, _stats_rows(result.items), title=f"{result.provider}")
    typer.echo(
        f"{result.provider}: {result.credentials} credential(s), {result.with_capacity} with "
        f"capacity, {result.live_leases} live lease(s); today {result.daily_used:,} used, "
        f"{_of(result.daily_remaining)} left; this month {result.monthly_used:,} used, "
        f"{_of(result.monthly_remaining)} left"
    )


def register(app: typer.Typer) -> None:
    """Add these commands (and ``import``) to the ``keyplane vault`` sub-app."""
    from keyplane.cli.vault_import import import_credentials

    app.command("add")(add)
    app.command("list")(list_credentials)
    app.command("show")(show)
    app.command("update")(update)
    app.command("delete")(delete)
    app.command("stats")(stats)
    app.command("import")(import_credentials)
