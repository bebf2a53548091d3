"""``ash``: seed 002's command line on Keyplane's vault.

``ash keys add|list|get|update|delete``, ``ash usage stats`` and ``ash health``, configured by
the ``ASH_*`` variables (``ASH_STORAGE_BACKEND``, ``ASH_CONNECTION_STRING``,
``ASH_SHARED_SECRET``...), like the seed's. Exit codes: 0 done, 1 refused or not found,
2 bad usage or configuration, 3 the database is unreachable.

``--key`` on ``keys add`` is kept for the seed's scripts, but a command-line argument stays in
shell history and ``ps``: ``--key -`` reads the key from standard input and ``--key-env NAME``
from an environment variable. Printed output never holds a key unless ``--show-key(s)`` asks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keyplane import errors
from keyplane.compat.api_service_handler.client import APIServiceHandler
from keyplane.compat.api_service_handler.config import HandlerConfig
from keyplane.compat.api_service_handler.enums import StorageBackend
from keyplane.compat.api_service_handler.models import APIKey

T = TypeVar("T")

app = typer.Typer(
    name="ash",
    help="API Service Handler (ash) on Keyplane: manage upstream API keys (ASH_* settings).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage against limits.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(usage_app, name="usage")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

KeyId = Annotated[str, typer.Argument(help="The key's id (cred_...).", max=64)]
Limit = Annotated[int | None, typer.Option(min=0, max=2**53 - 1, show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _run(work: Callable[[APIServiceHandler], Awaitable[T]]) -> T:
    """Open the handler from ``ASH_*``, run ``work``, close; errors become exit codes."""

    async def main() -> T:
        handler = APIServiceHandler(config=HandlerConfig.load())
        if handler.config.storage_backend is StorageBackend.MEMORY:
            err.print(
                "[yellow]ASH_STORAGE_BACKEND is memory: nothing is kept after this command; "
                "set ASH_STORAGE_BACKEND and ASH_CONNECTION_STRING[/yellow]"
            )
        async with handler:
            return await work(handler)

    try:
        return asyncio.run(main())
    except errors.ConfigurationError as exc:
        err.print(f"[red]configuration:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from None
    except errors.StorageError as exc:
        err.print(f"[red]storage unavailable:[/red] {escape(exc.message)}")
        raise typer.Exit(3) from None
    except errors.ValidationError as exc:
        err.print(f"[red]invalid:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from None
    except errors.KeyplaneError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _key_dict(key: APIKey) -> dict[str, Any]:
    data = {k: _plain(v) for k, v in asdict(key).items()}
    data["status"] = str(key.status)
    return data


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _secret_given(key: str | None, key_env: str | None) -> str:
    if key_env is not None:
        value = os.environ.get(key_env)
        if value is None:
            err.print(f"[red]invalid:[/red] the variable {escape(key_env[:64])} is not set")
            raise typer.Exit(2)
        return value
    if key is None:
        err.print("[red]invalid:[/red] give --key, --key - (standard input) or --key-env")
        raise typer.Exit(2)
    if key == "-":
        return sys.stdin.readline(65536).rstrip("\r\n")
    err.print(
        "[yellow]the key is in your shell history and visible to ps: "
        "prefer --key - or --key-env NAME[/yellow]"
    )
    return key


@keys_app.command("add")
def keys_add(
    provider: Annotated[str, typer.Option(help="Provider name, e.g. openai (else custom).")],
    key: Annotated[
        str | None, typer.Option(help="The API key; '-' reads standard input.", show_default=False)
    ] = None,
    key_env: Annotated[
        str | None,
        typer.Option("--key-env", help="Read the key from this variable.", show_default=False),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="A friendly name.", show_default=False)] = None,
    daily_limit: Limit = None,
    monthly_limit: Limit = None,
    max_concurrent: Annotated[int | None, typer.Option(min=0, max=1_000_000)] = None,
    environment: Annotated[str, typer.Option(help="Deployment environment.")] = "production",
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeat for more).")] = None,
    as_json: Json = False,
) -> None:
    """Add a new API key."""
    secret = _secret_given(key, key_env)

    async def work(handler: APIServiceHandler) -> APIKey:
        return await handler.add_key(
            provider=provider,
            key_value=secret,
            alias=alias,
            daily_limit=daily_limit,
            monthly_limit=monthly_limit,
            max_concurrent=max_concurrent,
            environment=environment,
            tags=tag or [],
        )

    added = _run(work)
    if as_json:
        out.print_json(json.dumps(_key_dict(added)))
    else:
        out.print(f"added {added.id} ({escape(added.provider)}, {escape(added.alias or '')})")


@keys_app.command("list")
def keys_list(
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    status: Annotated[
        str | None, typer.Option(help="active, inactive, rate_limited or revoked.")
    ] = None,
    show_keys: Annotated[bool, typer.Option("--show-keys", help="Print full keys.")] = False,
    as_json: Json = False,
) -> None:
    """List keys with their usage today."""
    if status is not None and status not in ("active", "inactive", "rate_limited", "revoked"):
        err.print("[red]invalid:[/red] status is active, inactive, rate_limited or revoked")
        raise typer.Exit(2)

    async def work(handler: APIServiceHandler) -> list[APIKey]:
        return await handler.get_all_keys(provider=provider, status=status, decrypt=show_keys)

    found = _run(work)
    if as_json:
        out.print_json(json.dumps([_key_dict(k) for k in found]))
        return
    table = Table()
    for column in ("id", "provider", "alias", "status", "environment", "today", "key"):
        # Folded, never cut: an id or key shown must be whole to be copied.
        table.add_column(column, overflow="fold")
    for k in found:
        table.add_row(
            k.id,
            escape(k.provider),
            escape(k.alias or ""),
            str(k.status),
            escape(k.environment or ""),
            f"{k.daily_usage_count}/{_limit(k.daily_limit)}",
            escape(k.key_value),
        )
    out.print(table)


@keys_app.command("get")
def keys_get(
    key_id: KeyId,
    show_key: Annotated[bool, typer.Option("--show-key", help="Print the full key.")] = False,
    as_json: Json = False,
) -> None:
    """Show one key in detail."""

    async def work(handler: APIServiceHandler) -> APIKey:
        return await handler.get_key(key_id, decrypt=show_key)

    found = _run(work)
    data = _key_dict(found)
    if as_json:
        out.print_json(json.dumps(data))
        return
    for name, value in data.items():
        out.print(f"{name}: {escape(str(value))}")


@keys_app.command("update")
def keys_update(
    key_id: KeyId,
    alias: Annotated[str | None, typer.Option(help="New friendly name.")] = None,
    status: Annotated[str | None, typer.Option(help="active or inactive.")] = None,
    daily_limit: Limit = None,
    monthly_limit: Limit = None,
    max_concurrent: Annotated[int | None, typer.Option(min=0, max=1_000_000)] = None,
    as_json: Json = False,
) -> None:
    """Update a key's alias, status or limits."""

    async def work(handler: APIServiceHandler) -> APIKey:
        return await handler.update_key(
            key_id,
            alias=alias,
            status=status,
            daily_limit=daily_limit,
            monthly_limit=monthly_limit,
            max_concurrent=max_concurrent,
        )

    updated = _run(work)
    if as_json:
        out.print_json(json.dumps(_key_dict(updated)))
    else:
        out.print(f"updated {updated.id}")


@keys_app.command("delete")
def keys_delete(
    key_id: KeyId,
    hard: Annotated[bool, typer.Option("--hard", help="Erase instead of revoking.")] = False,
) -> None:
    """Revoke a key (kept for audit), or erase it with --hard."""

    async def work(handler: APIServiceHandler) -> bool:
        return await handler.delete_key(key_id, hard=hard)

    if not _run(work):
        err.print(f"[red]error:[/red] API key not found: {escape(key_id)}")
        raise typer.Exit(1)
    out.print(f"{'erased' if hard else 'revoked'} {escape(key_id)}")


@usage_app.command("stats")
def usage_stats(key_id: KeyId, as_json: Json = False) -> None:
    """A key's use today and this month against its limits."""

    async def work(handler: APIServiceHandler) -> dict[str, Any]:
        stats = await handler.get_usage_stats(key_id)
        data = {k: _plain(v) for k, v in asdict(stats).items()}
        data["status"] = str(stats.status)
        return data

    data = _run(work)
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table("", "used", "limit", "remaining")
    table.add_row(
        "today",
        str(data["daily_usage_count"]),
        _limit(data["daily_limit"]),
        _limit(data["daily_remaining"]),
    )
    table.add_row(
        "this month",
        str(data["monthly_usage_count"]),
        _limit(data["monthly_limit"]),
        _limit(data["monthly_remaining"]),
    )
    table.add_row("in use now", str(data["concurrent_usage"]), _limit(data["max_concurrent"]), "")
    out.print(f"{escape(data['alias'] or '')} ({escape(data['provider'])}), {data['status']}")
    out.print(table)


@app.command()
def health(as_json: Json = False) -> None:
    """Test the database connection."""

    async def work(handler: APIServiceHandler) -> dict[str, Any]:
        return await handler.health_check()

    report = _run(work)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        for name, value in report.items():
            out.print(f"{name}: {value}")
    if not report["storage_healthy"]:
        raise typer.Exit(3)


def main() -> None:
    app()
