"""What the commands that talk to a server share: options, the SDK client, errors, output.

Exit codes (documented in docs/cli.md):

====  ==========================================================================
0     success
1     the server refused the request (404, 409, 422, 429, ...) or rows were rejected
2     usage error: bad arguments or options (also Typer's own code)
3     cannot reach the server: refused, timed out, or it answered 5xx
4     authentication or permission: 401 / 403 (check --key / KEYPLANE_MANAGEMENT_KEY)
====  ==========================================================================
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keyplane.client import (
    APIError,
    AuthenticationError,
    Client,
    ConnectionError,
    KeyplaneError,
    PermissionDeniedError,
    ServerError,
)
from keyplane.client.models import JsonNumber

T = TypeVar("T")


class Exit(IntEnum):
    OK = 0
    REFUSED = 1
    USAGE = 2
    UNREACHABLE = 3
    AUTH = 4


# soft_wrap: one message is one line, however narrow the (non-)terminal is.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="KEYPLANE_URL",
        help="The Keyplane server. Default: http://127.0.0.1:8400.",
        show_default=False,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="KEYPLANE_MANAGEMENT_KEY",
        help="The management key to authenticate with.",
        show_default=False,
        show_envvar=True,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, max=600, help="Seconds to wait for each answer.")
]


def fail(message: str, code: Exit) -> NoReturn:
    """Print a one-line error and exit with ``code``."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(int(code))


def usage_error(message: str) -> NoReturn:
    fail(message, Exit.USAGE)


def exit_code_for(exc: KeyplaneError) -> Exit:
    """The exit code of an SDK error."""
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return Exit.AUTH
    if isinstance(exc, ConnectionError | ServerError):
        return Exit.UNREACHABLE
    return Exit.REFUSED


def describe(exc: KeyplaneError) -> str:
    """One line for an SDK error; a hint where the fix is usually the same."""
    if isinstance(exc, AuthenticationError):
        return f"{exc} (check --key or KEYPLANE_MANAGEMENT_KEY)"
    if isinstance(exc, APIError):
        return str(exc)
    return f"{exc} (is the server running? check --url or KEYPLANE_URL)"


@contextlib.contextmanager
def connect(url: str | None, key: str | None, timeout: float = 10.0) -> Iterator[Client]:
    """An SDK client for a command; SDK errors become one line and an exit code."""
    try:
        client = Client(url, key, timeout=timeout)
    except ValueError as exc:
        usage_error(str(exc))
    try:
        with client:
            yield client
    except KeyplaneError as exc:
        fail(describe(exc), exit_code_for(exc))


def plain(value: Any) -> Any:
    """JSON-ready form of models, Decimals (as exact text), datetimes and containers.

    Credits are exact decimal strings everywhere, those inside a policy too: a policy is free
    JSON in the SDK's models, where ``budget.credit_limit`` and ``budget.per_model`` came back
    as numbers (:func:`_budget_credits_as_text`).
    """
    return to_jsonable_python(_budget_credits_as_text(value))


def _budget_credits_as_text(value: Any) -> Any:
    if isinstance(value, BaseModel):
        value = value.model_dump()  # python mode: the SDK's JsonNumbers keep their text
    if isinstance(value, dict):
        shown = {name: _budget_credits_as_text(item) for name, item in value.items()}
        budget = shown.get("budget")
        if isinstance(budget, dict):
            shown["budget"] = _budget_as_text(budget)
        costs = shown.get("costs")
        if isinstance(costs, dict):
            # Every amount of ``costs`` is credits (alert_threshold is a fraction).
            shown["costs"] = {
                name: item if name == "alert_threshold" else _credit_text(item)
                for name, item in costs.items()
            }
        limits = shown.get("cost_limits")
        if isinstance(limits, dict):  # models.cost_limits
            shown["cost_limits"] = {
                model: (
                    {**item, "max_cost_per_day": _credit_text(item["max_cost_per_day"])}
                    if isinstance(item, dict) and "max_cost_per_day" in item
                    else item
                )
                for model, item in limits.items()
            }
        return shown
    if isinstance(value, list | tuple):
        return [_budget_credits_as_text(item) for item in value]
    return value


def _budget_as_text(budget: dict[str, Any]) -> dict[str, Any]:
    shown = dict(budget)
    if "credit_limit" in shown:
        shown["credit_limit"] = _credit_text(shown["credit_limit"])
    per_model = shown.get("per_model")
    if isinstance(per_model, dict):
        shown["per_model"] = {model: _credit_text(v) for model, v in per_model.items()}
    return shown


def _credit_text(value: Any) -> Any:
    """An amount of credits as exact decimal text; anything else (null) as it is."""
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return value
    return str(value) if not isinstance(value, float) else repr(value)


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout: one document, keys in a stable order."""
    sys.stdout.write(json.dumps(plain(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(value: T, as_json: bool, render: Callable[[T], object]) -> None:
    """Print one answer: as JSON with ``--json``, else the way ``render`` shows it to a person."""
    if as_json:
        print_json(value)
    else:
        render(value)


def cell(value: Any) -> str:
    """A table cell: empty for None, compact JSON for lists and objects."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(plain(value), separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, BaseModel):
        return cell(plain(value))
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")  # --json has the full form
    return str(value)


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """Print rows as a Rich table (values escaped: they are data, not markup)."""
    shown = Table(title=title)
    for number, name in enumerate(columns):
        # Never cut a value short: ids and hashes are meant to be copied. The first column
        # (the id) stays on one line; the others fold when the terminal is narrow.
        shown.add_column(name, no_wrap=number == 0, overflow="fold")
    for row in rows:
        shown.add_row(*(escape(cell(value)) for value in row))
    (console or out).print(shown)


def fields(pairs: Sequence[tuple[str, Any]], title: str | None = None) -> None:
    """Print one object as a two-column table."""
    table(("field", "value"), pairs, title)


def parse_json_option(name: str, text: str | None) -> Any:
    """A JSON option's value: inline JSON, or ``@path`` to read it from a file."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            usage_error(f"{name}: cannot read {text[1:]}: {exc.strerror}")
    try:
        return json.loads(text)
    except ValueError as exc:
        usage_error(f"{name} is not valid JSON: {exc}")


def show_secret(secret: str, what: str) -> None:
    """Print a freshly issued secret on stdout, with the shown-once warning on stderr."""
    err.print(f"[yellow]The {what} is shown only this once; store it now.[/yellow]")
    out.print(escape(secret), highlight=False)
