"""The domain layer must stay pure: no web, storage or driver imports, direct or indirect."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import keyplane.domain

DOMAIN = Path(keyplane.domain.__file__).parent
FORBIDDEN = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "redis",
    "httpx",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "typer",
    "rich",
    "keyplane.api",
    "keyplane.store",
    "keyplane.services",
    "keyplane.cli",
    "keyplane.settings",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_domain_modules_import_nothing_from_outer_layers() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in DOMAIN.glob("*.py")
        for name in _imports(path)
        if _forbidden(name)
    }
    assert offenders == set()


def test_importing_the_domain_loads_no_outer_layer_module() -> None:
    code = (
        "import sys, pkgutil, importlib, keyplane.domain as d\n"
        "for m in pkgutil.iter_modules(d.__path__):\n"
        "    importlib.import_module('keyplane.domain.' + m.name)\n"
        "print('\\n'.join(sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert [name for name in loaded if _forbidden(name)] == []


def test_the_checker_would_catch_an_offender() -> None:
    assert _forbidden("sqlalchemy.orm")
    assert _forbidden("keyplane.api.app")
    assert not _forbidden("keyplane.domain.keys")
