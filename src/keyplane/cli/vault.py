"""``keyplane vault ...``: the master key chores (generate-key, key-id, rotate-master, check)
here, and the credential commands from ``keyplane.cli.vault_credentials``.

The chores work offline: they need the master key and talk to the database directly
(``KEYPLANE_DATABASE_URL``), like ``keyplane migrate``, with no running server. The credential
commands talk to a server through the SDK, like ``keyplane keys``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from keyplane.cli import vault_credentials
from keyplane.domain.envelope import Keyring, MasterKey
from keyplane.errors import KeyplaneError, VaultKeyError
from keyplane.settings import Settings, read_master_key_file

app = typer.Typer(
    name="vault",
    help="Upstream credential vault: credentials, master keys and rotation.",
    no_args_is_help=True,
)
vault_credentials.register(app)


def _settings(**overrides: object) -> Settings:
    # Imported here: keyplane.cli.main imports this module to register it.
    from keyplane.cli.main import _settings as load

    return load(**overrides)


def _fail(message: str, code: int) -> typer.Exit:
    from keyplane.cli.main import err

    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _say(message: str) -> None:
    from keyplane.cli.main import err

    err.print(message)


@app.command("generate-key")
def generate_key(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the key to this new file (mode 0600) instead of standard output.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a new random vault master key (base64 of 32 bytes)."""
    key = MasterKey.generate()
    if output is None:
        typer.echo(key.to_base64())
        return
    try:
        # O_EXCL: never overwrite a key file, which could destroy the only copy of a key.
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _fail(f"cannot create {output}: {exc.strerror or exc}", 1) from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.to_base64() + "\n")
    _say(f"wrote master key {key.key_id} to {escape(str(output))}")


@app.command("key-id")
def key_id(
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", help="Print this file's key id instead of the configured ones."),
    ] = None,
) -> None:
    """Print the public ids of the configured master keys (never the keys)."""
    try:
        if key_file is not None:
            typer.echo(read_master_key_file(key_file).key_id)
            return
        keyring = _settings().vault_keyring()
    except KeyplaneError as exc:
        raise _fail(exc.message, 2) from None
    if keyring is None:
        raise _fail("no vault master key: set KEYPLANE_VAULT_KEY or KEYPLANE_VAULT_KEY_FILE", 2)
    typer.echo(f"current  {keyring.current.key_id}")
    for key in keyring.previous:
        typer.echo(f"previous {key.key_id}")


@app.command("rotate-master")
def rotate_master(
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Overrides KEYPLANE_DATABASE_URL.", show_default=False),
    ] = None,
    old_key_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--old-key-file",
            help="A file holding an old master key (repeatable); adds to "
            "KEYPLANE_VAULT_PREVIOUS_KEYS.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Credentials re-wrapped per transaction.")
    ] = 500,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be re-wrapped.")
    ] = False,
) -> None:
    """Re-wrap every stored credential under the current master key (KEYPLANE_VAULT_KEY).

    Safe while servers run with the new key as KEYPLANE_VAULT_KEY and the old one in
    KEYPLANE_VAULT_PREVIOUS_KEYS. Idempotent: re-run it after an interruption.
    """
    from keyplane.services import vault_rotation
    from keyplane.store.database import Database

    settings = _settings(database_url=database_url)
    try:
        configured = settings.vault_keyring()
        old_keys = [read_master_key_file(path) for path in old_key_file or []]
    except KeyplaneError as exc:
        raise _fail(exc.message, 2) from None
    if configured is None:
        raise _fail(
            "no vault master key: put the NEW key in KEYPLANE_VAULT_KEY (or "
            "KEYPLANE_VAULT_KEY_FILE) and the old one in --old-key-file or "
            "KEYPLANE_VAULT_PREVIOUS_KEYS",
            2,
        )
    keyring = Keyring(configured.current, [*configured.previous, *old_keys])

    def progress(report: vault_rotation.RotationReport) -> None:
        _say(f"  re-wrapped {report.rewrapped} so far")

    async def run() -> vault_rotation.RotationReport | dict[str, int]:
        db = Database.from_settings(settings)
        try:
            counts = await vault_rotation.count_by_key(db.sealed_secrets)
            vault_rotation.check_keys(keyring, counts)
            if dry_run:
                return counts
            report = await vault_rotation.rotate_master(
                db.sealed_secrets, keyring, batch_size=batch_size, progress=progress
            )
            await _audit_rotation(db, settings, report)
            return report
        finally:
            await db.close()

    try:
        outcome = asyncio.run(run())
    except VaultKeyError as exc:
        raise _fail(exc.message, 2) from None
    except KeyplaneError as exc:
        raise _fail(exc.message, 1) from None
    current = keyring.current.key_id
    if isinstance(outcome, dict):
        to_do = sum(n for key, n in outcome.items() if key != current)
        for key, n in sorted(outcome.items()):
            typer.echo(f"{key}  {n} credentials{'  (current)' if key == current else ''}")
        typer.echo(f"would re-wrap {to_do} credentials to master key {current}")
        return
    typer.echo(
        f"re-wrapped {outcome.rewrapped} credentials to master key {current}; "
        f"{outcome.already_current} were already on it; "
        f"{outcome.changed} changed meanwhile and were retried; "
        f"{len(outcome.failed)} failed; {outcome.remaining} remain on older keys"
    )
    for credential_id, reason in outcome.failed:
        _say(f"[red]failed:[/red] {escape(credential_id)}: {escape(reason)}")
    if not outcome.complete:
        raise _fail("rotation incomplete: keep the old key configured, fix the failures, re-run", 1)
    _say("[green]every credential is on the current master key; the old key can be removed[/green]")


@app.command("check")
def check(
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Overrides KEYPLANE_DATABASE_URL.", show_default=False),
    ] = None,
    old_key_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--old-key-file", help="An extra old key to try (repeatable).", show_default=False
        ),
    ] = None,
) -> None:
    """Open every stored secret with the configured keys (nothing is printed or kept) and
    report the credentials that do not open."""
    from keyplane.services import vault_rotation
    from keyplane.store.database import Database

    settings = _settings(database_url=database_url)
    try:
        configured = settings.vault_keyring()
        old_keys = [read_master_key_file(path) for path in old_key_file or []]
    except KeyplaneError as exc:
        raise _fail(exc.message, 2) from None
    if configured is None:
        raise _fail("no vault master key: set KEYPLANE_VAULT_KEY or KEYPLANE_VAULT_KEY_FILE", 2)
    keyring = Keyring(configured.current, [*configured.previous, *old_keys])

    async def run() -> vault_rotation.CheckReport:
        db = Database.from_settings(settings)
        try:
            return await vault_rotation.check_all(db.sealed_secrets, keyring)
        finally:
            await db.close()

    try:
        report = asyncio.run(run())
    except KeyplaneError as exc:
        raise _fail(exc.message, 1) from None
    for key, n in sorted(report.by_key.items()):
        role = (
            "current"
            if key == keyring.current.key_id
            else "previous"
            if key in keyring.key_ids
            else "NOT CONFIGURED"
        )
        typer.echo(f"{key}  {n} credentials  ({role})")
    typer.echo(f"{report.opened} opened, {len(report.failed)} failed")
    for credential_id, reason in report.failed:
        _say(f"[red]failed:[/red] {escape(credential_id)}: {escape(reason)}")
    if report.failed:
        raise typer.Exit(1)


async def _audit_rotation(db: Any, settings: Settings, report: Any) -> None:
    """Record ``vault.master_key.rotated`` (as the system: the operator ran the command)."""
    from keyplane.domain.changes import SYSTEM, Journal
    from keyplane.domain.clock import SystemClock
    from keyplane.services.runtime import enable_audit
    from keyplane.settings import resolve_server_secret

    enable_audit(db, resolve_server_secret(settings))
    now = SystemClock().now()
    org, _ = await db.tenancy.ensure_default_tenancy(now)
    journal = Journal(SYSTEM, now)
    journal.record(
        "vault.master_key.rotated",
        org_id=org.id,
        target_type="master_key",
        target_id=report.current_key_id,
        details={
            "rewrapped": report.rewrapped,
            "already_current": report.already_current,
            "failed": len(report.failed),
            "remaining": report.remaining,
        },
    )
    await db.audit.record_alone(journal)
