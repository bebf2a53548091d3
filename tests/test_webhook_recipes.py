"""The verification recipes in docs/webhooks.md run, accept a Keyplane signature and refuse a
tampered one (Node and openssl when installed; Go has no toolchain here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from keyplane.webhooks import new_secret, signature_headers

DOC = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"


def _block(language: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Verifying signatures") :]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match is not None, language
    return match.group(1)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_node_recipe_verifies(tmp_path: Path) -> None:
    secret, other = new_secret(), new_secret()
    body = '{"type":"key.revoked","data":{"id":"key_1"}}'
    headers = signature_headers([other, secret], "msg_node", int(time.time()), body)
    script = tmp_path / "verify.js"
    script.write_text(
        _block("js")
        + f"""
const headers = {json.dumps(headers)};
verifyWebhook(Buffer.from({json.dumps(body)}), headers, {json.dumps(secret)});
try {{
  verifyWebhook(Buffer.from({json.dumps(body + " ")}), headers, {json.dumps(secret)});
  process.exit(3);
}} catch (e) {{ console.log("refused: " + e.message); }}
""",
        encoding="utf-8",
    )
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: no matching signature" in done.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_shell_recipe_verifies(tmp_path: Path) -> None:
    secret = new_secret()
    body = tmp_path / "body.json"
    body.write_bytes(b'{"a": "b"}\n')
    headers = signature_headers(secret, "msg_sh", int(time.time()), body.read_bytes())
    script = tmp_path / "verify.sh"
    script.write_text(_block("sh"), encoding="utf-8")

    def run(signature: str) -> subprocess.CompletedProcess[str]:
        args = ["sh", str(script), str(body), "msg_sh", headers["webhook-timestamp"], signature]
        env = {"SECRET": secret, "PATH": "/usr/bin:/bin"}
        return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)

    good = run("v1,AAAA " + headers["webhook-signature"])
    assert (good.returncode, good.stdout.strip()) == (0, "valid"), good.stderr
    bad = run("v1,AAAA")
    assert (bad.returncode, bad.stdout.strip()) == (1, "INVALID")
