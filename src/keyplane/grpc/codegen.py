"""Generate ``keyplane/grpc/gen`` from ``proto/``: ``make proto``.

``make proto`` runs ``python -m keyplane.grpc.codegen``.

protoc writes imports from the proto paths (``from envoy.service.auth.v3 import ...``); they are
rewritten under ``keyplane.grpc.gen`` so the generated modules never shadow, or get shadowed
by, other packages named ``envoy`` or ``google.rpc``. ``google.protobuf`` imports stay: those
are the protobuf runtime's own well-known types. ``tests/grpc/test_codegen.py`` runs this into
a temporary directory and compares it with the committed code.

Needs ``grpcio-tools`` (the ``test`` extra).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTO = ROOT / "proto"
THIRD_PARTY = PROTO / "third_party"
OUT = Path(__file__).resolve().parent / "gen"

_LOCAL_IMPORT = re.compile(r"^from (keyplane|envoy|google\.rpc)((?:\.\w+)*) import ", re.MULTILINE)


def sources() -> list[Path]:
    """Every .proto to compile, Keyplane's and the Envoy subset."""
    return sorted((PROTO / "keyplane").rglob("*.proto")) + sorted(THIRD_PARTY.rglob("*.proto"))


def generate(out: Path) -> None:
    """Compile every proto into ``out`` (replaced), messages, stubs and gRPC helpers."""
    from grpc_tools import protoc  # the test extra: only code generation needs it

    includes = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as raw:
        work = Path(raw)
        arguments = [
            "protoc",
            f"-I{PROTO}",
            f"-I{THIRD_PARTY}",
            f"-I{includes}",
            f"--python_out={work}",
            f"--pyi_out={work}",
            f"--grpc_python_out={work}",
        ]
        for source in sources():
            base = THIRD_PARTY if THIRD_PARTY in source.parents else PROTO
            arguments.append(str(source.relative_to(base)))
        if protoc.main(arguments) != 0:
            raise SystemExit("protoc failed")
        if out.exists():
            shutil.rmtree(out)
        for path in sorted(work.rglob("*.py*")):
            target = out / path.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _LOCAL_IMPORT.sub(r"from keyplane.grpc.gen.\1\2 import ", path.read_text())
            target.write_text(text)
        for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()


def main() -> None:
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)


if __name__ == "__main__":
    main()
