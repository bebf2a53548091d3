"""``keyplane projects ...``: groups of keys with their own key prefix."""

from __future__ import annotations

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
)
from keyplane.client import Project

app = typer.Typer(help="Create and list projects.", no_args_is_help=True)


def _show(project: Project, as_json: bool) -> None:
    if as_json:
        print_json(project)
        return
    fields(
        [
            ("id", project.id),
            ("name", project.name),
            ("key prefix", project.key_prefix),
            ("created at", project.created_at),
        ]
    )


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the project.")],
    key_prefix: Annotated[
        str | None, typer.Option(help="What its keys start with [default: kp].")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Create a project (needs an organization-wide management key)."""
    with connect(url, key, timeout) as client:
        project = client.projects.create(name, key_prefix=key_prefix)
    _show(project, as_json)


@app.command("list")
def list_projects(
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """List the projects the management key reaches."""
    with connect(url, key, timeout) as client:
        projects = client.projects.list()
    if as_json:
        print_json({"data": projects})
        return
    table(
        ("id", "name", "key prefix", "created"),
        [(p.id, p.name, p.key_prefix, p.created_at) for p in projects],
        title=f"{len(projects)} project(s)",
    )


@app.command()
def show(
    project_id: Annotated[str, typer.Argument(help="The project's id (proj_...).")],
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Show one project."""
    with connect(url, key, timeout) as client:
        project = client.projects.get(project_id)
    _show(project, as_json)
