"""``keyplane audit ...``: the organization's audit log (docs/audit.md).

``verify`` lives here; the reading commands (list, show, export) join the same group.
"""

from __future__ import annotations

import typer

from keyplane.cli.remote import (
    Exit,
    JsonOption,
    KeyOption,
    TimeoutOption,
    UrlOption,
    connect,
    err,
    fields,
    print_json,
)

app = typer.Typer(help="The audit log: verify its hash chain.", no_args_is_help=True)


@app.command()
def verify(
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 60.0,
) -> None:
    """Check the audit chain (needs audit:read); exits 1 when a link is broken."""
    with connect(url, key, timeout) as client:
        result = client.audit.verify()
    if as_json:
        print_json(result)
    else:
        broken = result.first_broken
        checkpoint = result.checkpoint
        fields(
            [
                ("ok", "yes" if result.ok else "NO"),
                ("entries checked", result.checked),
                (
                    "first broken link",
                    None
                    if broken is None
                    else f"seq {broken.seq} ({broken.id or 'missing'}): {broken.reason}",
                ),
                (
                    "starts after checkpoint",
                    None if checkpoint is None else f"seq {checkpoint.seq}",
                ),
            ]
        )
    if not result.ok:
        if not as_json:
            err.print("the audit chain is broken: see docs/audit.md")
        raise typer.Exit(int(Exit.REFUSED))
