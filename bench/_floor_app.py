"""The floor for ``bench/http_floor.py``: a raw ASGI app doing the least a verify must do.

``POST /v1/verify``: read the body, parse the JSON, check the key's shape with one regex,
HMAC-SHA256 it, look the digest up in a dict and answer the same JSON document Keyplane
answers for that key (its ``request_id`` filled in). ``GET /healthz``: the same document as
Keyplane's. No routing framework, no middleware, no validation beyond that: it is what this
hardware and this server (uvicorn, same options) allow, not a product.

Run by ``bench/http_floor.py`` as ``python bench/_floor_app.py ANSWERS PORT``, where ANSWERS is
a JSON file ``{"secret": ..., "answers": [[key, answer], ...]}``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import uvicorn

from keyplane.api.limited_protocol import LimitedHttpToolsProtocol
from keyplane.domain.crypto import KeyedSha256

KEY_SHAPE = re.compile(r"[a-z][a-z0-9_-]{0,15}_(?:live|test)_[0-9A-Za-z]{36}")
JSON_HEADERS = [(b"content-type", b"application/json")]


async def send_json(send: Any, status: int, payload: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


def build_app(secret: bytes, answers: dict[str, dict[str, Any]], health: bytes) -> Any:
    # The same precomputed HMAC as Keyplane's (``domain/crypto.py``), so the ratio does not
    # count a technique the floor could use too.
    keyed = KeyedSha256(secret)
    by_digest = {keyed.hexdigest(key.encode()): answer for key, answer in answers.items()}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, health)
            return
        if path != "/v1/verify":
            await send_json(send, 404, b"{}")
            return
        key = json.loads(await read_body(receive))["key"]
        answer = None
        if KEY_SHAPE.fullmatch(key):
            digest = keyed.hexdigest(key.encode())
            answer = by_digest.get(digest)
        if answer is None:
            await send_json(send, 200, b'{"valid": false, "code": "NOT_FOUND"}')
            return
        payload = json.dumps({**answer, "request_id": os.urandom(12).hex()})
        await send_json(send, 200, payload.encode())

    return app


def main() -> None:
    answers_path, port = sys.argv[1], int(sys.argv[2])
    with open(answers_path) as file:
        data = json.load(file)
    app = build_app(
        data["secret"].encode(),
        {key: answer for key, answer in data["answers"]},
        json.dumps(data["health"]).encode(),
    )
    # The options of `keyplane serve` that bear on speed (cli/main.py): its HTTP protocol
    # (uvicorn's httptools protocol with the head capped and a response written in one call),
    # the event loop uvicorn picks (uvloop when installed), no access log, no Server header.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        http=LimitedHttpToolsProtocol,
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
