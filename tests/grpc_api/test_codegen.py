"""The committed generated code is what `make proto` makes from proto/ today."""

from __future__ import annotations

from pathlib import Path

from keyplane.grpc import codegen


def _files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    fresh = tmp_path / "gen"
    codegen.generate(fresh)
    committed = _files(codegen.OUT)
    generated = _files(fresh)
    assert sorted(committed) == sorted(generated), "run `make proto` and commit the result"
    stale = [name for name in generated if committed[name] != generated[name]]
    assert not stale, f"stale generated files (run `make proto`): {stale}"


def test_generated_imports_stay_inside_the_package() -> None:
    for path in codegen.OUT.rglob("*.py*"):
        for line in path.read_text().splitlines():
            if line.startswith(
                ("from envoy", "from google.rpc", "from keyplane.v1", "import envoy")
            ):
                raise AssertionError(f"{path.name}: {line}")
