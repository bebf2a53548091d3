"""``keyplane report security``: the security report (docs/leaks-and-reports.md)."""

from __future__ import annotations

import csv
import sys
from typing import Annotated

import typer

from keyplane.cli.remote import (
    JsonOption,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    fields,
    print_json,
    table,
    usage_error,
)
from keyplane.client import SecurityReport

app = typer.Typer(help="Reports over the organization's keys.", no_args_is_help=True)

_DAYS = {"min": 1, "max": 3650}
_TYPES = (
    "dormant_key",
    "unlimited_key",
    "stale_key",
    "wildcard_scope_key",
    "unrestricted_network_key",
    "expiring_key",
    "dormant_management_key",
    "wildcard_management_key",
)
_COLUMNS = ("type", "severity", "target_type", "target_id", "project_id", "name")


@app.command()
def security(
    dormant_days: Annotated[
        int | None, typer.Option(help="Unused this long is dormant (server default 90).", **_DAYS)
    ] = None,
    stale_days: Annotated[
        int | None,
        typer.Option(help="A secret this old, never rotated, is stale (default 180).", **_DAYS),
    ] = None,
    expiring_days: Annotated[
        int | None, typer.Option(help="Expiring within this is reported (default 14).", **_DAYS)
    ] = None,
    management_unused_days: Annotated[
        int | None,
        typer.Option(help="A management key unused this long (default 90).", **_DAYS),
    ] = None,
    issue_type: Annotated[
        list[str] | None,
        typer.Option("--type", help="List only this issue type (repeatable)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=0, max=1000, help="Most issues listed; counts cover all.")
    ] = 100,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the issues as CSV.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 60.0,
) -> None:
    """Dormant, unlimited, stale, wildcard, open-network and expiring keys (reports:read)."""
    if as_csv and as_json:
        usage_error("--csv and --json are exclusive")
    unknown = [name for name in issue_type or () if name not in _TYPES]
    if unknown:
        usage_error(f"unknown issue type {unknown[0]!r}; known: {', '.join(_TYPES)}")
    with connect(url, key, timeout) as client:
        report = client.reports.security(
            dormant_days=dormant_days,
            stale_days=stale_days,
            expiring_days=expiring_days,
            management_unused_days=management_unused_days,
            types=issue_type,
            limit=limit,
        )
    if as_json:
        print_json(report)
    elif as_csv:
        _csv(report)
    else:
        _tables(report)


def _csv(report: SecurityReport) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for issue in report.issues:
        writer.writerow([_safe(getattr(issue, column) or "") for column in _COLUMNS])
    sys.stdout.flush()


def _safe(value: str) -> str:
    # A name is the customer's text: never let a spreadsheet read it as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _tables(report: SecurityReport) -> None:
    fields(
        [
            ("generated at", report.generated_at),
            ("keys scanned", report.keys_scanned),
            ("thresholds (days)", report.thresholds),
        ],
        title="security report",
    )
    table(("issue type", "count"), sorted(report.counts.items()), title="counts")
    shown = f"{len(report.issues)} issue(s)" + (" (more: see counts)" if report.truncated else "")
    table(
        _COLUMNS,
        [[getattr(issue, column) for column in _COLUMNS] for issue in report.issues],
        title=shown,
    )
