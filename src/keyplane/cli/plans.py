"""``keyplane plans ...``: named policy templates."""

from __future__ import annotations

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
from keyplane.client import Plan

app = typer.Typer(help="Create, list, change and delete plans.", no_args_is_help=True)

RefArgument = Annotated[str, typer.Argument(help="The plan's name or id.")]
PolicyOption = Annotated[str | None, typer.Option(help="A JSON object, or @file.json.")]


def _policy(text: str | None) -> dict[str, Any] | None:
    value = parse_json_option("--policy", text)
    if value is not None and not isinstance(value, dict):
        usage_error("--policy must be a JSON object")
    return value


def _show(plan: Plan, as_json: bool) -> None:
    if as_json:
        print_json(plan)
        return
    fields(
        [
            ("id", plan.id),
            ("name", plan.name),
            ("description", plan.description),
            ("policy", plan.policy),
            ("created at", plan.created_at),
            ("updated at", plan.updated_at),
        ]
    )


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits, '-' and '_'.")],
    description: Annotated[str | None, typer.Option()] = None,
    policy: PolicyOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Create a plan."""
    parsed = _policy(policy)
    with connect(url, key, timeout) as client:
        plan = client.plans.create(name, description=description, policy=parsed)
    _show(plan, as_json)


@app.command("list")
def list_plans(
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List every plan, by name."""
    with connect(url, key, timeout) as client:
        plans = client.plans.list()
    if as_json:
        print_json({"data": plans})
        return
    table(
        ("id", "name", "description", "policy"),
        [(p.id, p.name, p.description, p.policy) for p in plans],
        title=f"{len(plans)} plan(s)",
    )


@app.command()
def show(
    ref: RefArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one plan."""
    with connect(url, key, timeout) as client:
        plan = client.plans.get(ref)
    _show(plan, as_json)


@app.command()
def update(
    ref: RefArgument,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    policy: PolicyOption = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Change a plan; every key on it follows at once."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if description is not None:
        changes["description"] = description
    parsed = _policy(policy)
    if parsed is not None:
        changes["policy"] = parsed
    if not changes:
        usage_error("nothing to change: give --name, --description or --policy")
    with connect(url, key, timeout) as client:
        plan = client.plans.update(ref, **changes)
    _show(plan, as_json)


@app.command()
def delete(
    ref: RefArgument,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Delete a plan no key uses."""
    with connect(url, key, timeout) as client:
        plan = client.plans.delete(ref)
    if as_json:
        print_json(plan)
    else:
        typer.echo(f"{plan.id}: deleted")
