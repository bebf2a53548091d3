"""The ``keyplane`` command: ``serve``, ``migrate`` and ``version`` here; the commands that talk
to a server through the SDK live in their own modules (keys, plans, management_keys, projects,
signing_secrets, status, webhooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from pydantic import ValidationError as SettingsValidationError
from rich.console import Console
from rich.markup import escape

from keyplane import __version__
from keyplane.cli import (
    audit,
    audit_read,
    keys,
    management_keys,
    plans,
    projects,
    reports,
    signing_secrets,
    status,
    vault,
    webhooks,
)
from keyplane.cli.remote import Exit, JsonOption, KeyOption, UrlOption
from keyplane.errors import KeyplaneError
from keyplane.metrics import MULTIPROC_ENV, clear_multiprocess_dir
from keyplane.settings import Settings, resolve_server_secret, to_async_url

app = typer.Typer(
    name="keyplane",
    help="Self-hosted API key management.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Typer's --install-completion / --show-completion (bash, zsh, fish, PowerShell).
    add_completion=True,
    # -h everywhere: child contexts inherit the help option names.
    context_settings={"help_option_names": ["-h", "--help"]},
)
# soft_wrap: one message is one line, however narrow the (non-)terminal is.
err = Console(stderr=True, soft_wrap=True)

app.add_typer(keys.app, name="keys")
app.add_typer(plans.app, name="plans")
app.add_typer(management_keys.app, name="management-keys")
app.add_typer(projects.app, name="projects")
app.add_typer(signing_secrets.app, name="signing-secrets")
audit_read.register(audit.app)  # list, show, export beside verify
app.add_typer(audit.app, name="audit")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(reports.app, name="report")
app.command()(status.health)
app.command()(status.usage)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


#: The client options every server command takes, which may also come before the command.
_GLOBAL_ENV = {"url": "KEYPLANE_URL", "key": "KEYPLANE_MANAGEMENT_KEY"}


@app.callback()
def global_options(
    ctx: typer.Context,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.1,
            max=600,
            help="Seconds to wait for each answer. Default: 10 (5 for health).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Self-hosted API key management.

    --url, --key, --json and --timeout may come before the command (keyplane --json keys
    list) or after it (keyplane keys list --json); after it wins.
    """
    given = {
        name: value
        for name, value in {"url": url, "key": key}.items()
        if value is not None and _from_command_line(ctx, name)
    }
    if given:
        # An option before the command must beat the environment, as one after it does:
        # Click ranks a command's environment variable above any default handed down, so the
        # value goes into the environment, for this invocation only.
        saved = {name: os.environ.get(_GLOBAL_ENV[name]) for name in given}
        for name, value in given.items():
            os.environ[_GLOBAL_ENV[name]] = value
        ctx.call_on_close(lambda: _restore(saved))
    defaults: dict[str, Any] = {}
    if as_json:
        defaults["as_json"] = True
    if timeout is not None:
        defaults["timeout"] = timeout
    if defaults:
        ctx.default_map = _defaults_for(ctx.command, defaults)


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    # By name: Typer vendors its own Click, whose ParameterSource is not click's.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(_GLOBAL_ENV[name], None)
        else:
            os.environ[_GLOBAL_ENV[name]] = value


def _defaults_for(command: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A Click ``default_map`` giving ``values`` to every command below that has the option."""
    names = {param.name for param in command.params}
    found: dict[str, Any] = {name: v for name, v in values.items() if name in names}
    for name, sub in getattr(command, "commands", {}).items():
        found[name] = _defaults_for(sub, values)
    return found


#: Seconds requests (and live streams) get to finish once a stop is asked for.
STREAMS_GRACE_SECONDS = 10

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides KEYPLANE_DATABASE_URL.", show_default=False),
]


def _settings(**overrides: object) -> Settings:
    try:
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**given)
    except SettingsValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        err.print(f"[red]invalid configuration:[/red] {escape(problems)}")
        raise typer.Exit(Exit.USAGE) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides KEYPLANE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides KEYPLANE_PORT.")] = None,
    database_url: DatabaseOption = None,
    log_level: Annotated[str | None, typer.Option(help="Overrides KEYPLANE_LOG_LEVEL.")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            help="Serve the gRPC API and Envoy ext_authz here; overrides "
            "KEYPLANE_GRPC_PORT (default: off)."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Worker processes. More than one needs PostgreSQL and KEYPLANE_REDIS_URL.",
        ),
    ] = 1,
) -> None:
    """Apply pending migrations and serve the API."""
    import uvicorn

    from keyplane.api.app import create_app

    settings = _settings(
        host=host, port=port, database_url=database_url, log_level=log_level, grpc_port=grpc_port
    )
    if workers > 1:
        _check_can_share(settings)
        if settings.grpc_port is not None:
            # Each worker would bind the gRPC port; grpc is told not to share it.
            err.print("[red]error:[/red] --grpc-port serves from one process: use --workers 1")
            raise typer.Exit(Exit.USAGE)
    try:
        # Fail here, with one line, rather than as a traceback from the app's lifespan.
        to_async_url(settings.database_url)
        resolve_server_secret(settings)
        settings.vault_keyring()  # reads and checks KEYPLANE_VAULT_KEY_FILE
        application = create_app(settings)
    except KeyplaneError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(Exit.USAGE) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(Exit.USAGE) from None
    if settings.migrate_on_start:
        # Reach the database and migrate it before serving: an unreachable database is one
        # clear line and exit status 3 (as uvicorn's own failed startup), not a traceback.
        _migrate_or_exit(settings, exit_code=Exit.UNREACHABLE)
    options = server_options(settings)
    if workers == 1:
        uvicorn.run(application, **options)
        return
    # Each worker builds its own app from the environment: hand it the command-line overrides.
    for name, value in {
        "KEYPLANE_HOST": host,
        "KEYPLANE_PORT": port,
        "KEYPLANE_DATABASE_URL": database_url,
        "KEYPLANE_LOG_LEVEL": log_level,
    }.items():
        if value is not None:
            os.environ[name] = str(value)
    _first_start(settings)
    with _shared_metrics_dir():
        uvicorn.run(
            "keyplane.api.app:create_app",
            factory=True,
            workers=workers,
            # uvicorn's supervisor kills a worker that misses a 5 s health check; a worker
            # busy starting (imports, migration check, cache warm-up) on a loaded host can miss
            # it, and the kill-and-respawn loop never ends. A hung worker is still replaced.
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            **options,
        )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for serving ``settings`` (``keyplane serve``; the benchmarks serve
    with the same)."""
    from keyplane.api.limited_protocol import LimitedHttpToolsProtocol
    from keyplane.logging_config import logging_config

    return {
        # Caps request headers before they are buffered (uvicorn's own httptools protocol
        # has no limit); h11 is told the same size should anyone switch to it.
        "http": LimitedHttpToolsProtocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        # Longer than any pooling client's idle expiry, so the client gives up an idle
        # connection before the server closes it (see Settings.keep_alive_timeout).
        "timeout_keep_alive": settings.keep_alive_timeout,
        "host": settings.host,
        "port": settings.port,
        "log_config": logging_config(settings.log_level),
        "proxy_headers": False,
        # Keyplane writes its own access log (api/observe.py): uvicorn's would log the path,
        # where a key can travel, and twice the lines.
        "access_log": False,
        # Live usage streams never finish on their own: on SIGTERM, requests get this long to
        # complete, then open streams are cancelled and the shutdown (which writes queued
        # usage reports) goes on, instead of waiting for every subscriber to hang up.
        "timeout_graceful_shutdown": STREAMS_GRACE_SECONDS,
        "server_header": False,
    }


#: Seconds a ``--workers`` process may take to answer its supervisor's health check.
WORKER_HEALTHCHECK_SECONDS = 60


@contextlib.contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """Workers add their metrics up in one directory (prometheus_client's multi-process mode).

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is used (emptied first: counters start at zero
    with the server); otherwise a private temporary directory, removed when serving ends. Set
    before the workers start: each imports prometheus_client afresh and reads it then.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        if not os.path.isdir(given):
            err.print(f"[red]error:[/red] {MULTIPROC_ENV} is not a directory: {escape(given)}")
            raise typer.Exit(2)
        clear_multiprocess_dir(given)
        yield
        return
    with tempfile.TemporaryDirectory(prefix="keyplane-metrics-") as path:
        os.environ[MULTIPROC_ENV] = path
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


def _check_can_share(settings: Settings) -> None:
    """Several processes may serve only when their state is shared: refuse otherwise."""
    missing = []
    if not settings.async_database_url.startswith("postgresql"):
        missing.append("PostgreSQL (KEYPLANE_DATABASE_URL=postgresql://...)")
    if settings.redis_url is None:
        missing.append("Redis (KEYPLANE_REDIS_URL=redis://...)")
    if missing:
        err.print(
            "[red]error:[/red] several workers need "
            + " and ".join(missing)
            + ": SQLite and in-process limits belong to one process. "
            + "Configure them, or serve with one worker."
        )
        raise typer.Exit(2)


def _first_start(settings: Settings) -> None:
    """Start once in this process, so the default tenancy and a generated root key are made
    once, not by each worker at the same time."""
    import logging.config

    from keyplane.api.app import announce_root_key
    from keyplane.logging_config import logging_config
    from keyplane.services.runtime import Runtime

    # uvicorn configures logging only when it runs: the path of a generated key's file is
    # logged before that, in the same format.
    logging.config.dictConfig(logging_config(settings.log_level))

    async def run() -> None:
        runtime = await Runtime.start(settings)
        try:
            if runtime.generated_root_key is not None:
                announce_root_key(runtime.generated_root_key, settings)
        finally:
            await runtime.stop()

    asyncio.run(run())


@app.command()
def migrate(database_url: DatabaseOption = None) -> None:
    """Apply pending database migrations and exit."""
    settings = _settings(database_url=database_url)
    try:
        to_async_url(settings.database_url)  # an unsupported scheme is a usage error
    except KeyplaneError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(Exit.USAGE) from None
    _migrate_or_exit(settings, exit_code=Exit.REFUSED)
    err.print("[green]database is up to date[/green]")


def _migrate_or_exit(settings: Settings, exit_code: int) -> None:
    from keyplane.store.migrate import migrate as run_migrations
    from keyplane.store.unit import create_engine

    async def run() -> None:
        engine = create_engine(settings.async_database_url, settings.database_schema)
        try:
            await run_migrations(engine, settings.database_schema)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except KeyplaneError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(exit_code) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot reach the database: {escape(str(exc))}")
        raise typer.Exit(exit_code) from None


@app.command()
def version() -> None:
    """Print the Keyplane version."""
    typer.echo(__version__)


app.add_typer(vault.app, name="vault")


def main() -> None:
    app()
