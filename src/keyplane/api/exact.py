"""Credits as exact JSON numbers, in and out.

Python's ``json`` turns every JSON number with a fraction into a float before pydantic sees
it, and a float holds about 16 significant digits: ``999999999999.999999`` credits arrived
and left as ``1000000000000.0``. So money crosses the API without ever being a float:

- In: :class:`ExactJsonRoute` parses request bodies with numbers that keep their text
  (:class:`JsonNumber`, a float for every other field); the credits validator reads that text
  with the bounded ``money.to_micros``.
- Out: :func:`credits` renders micro-credits. Inside a request served by an
  :class:`ExactJsonRoute` it gives a marker string, ``"kp-exact-<nonce>:12.5"``, that goes
  through pydantic and FastAPI as any string does; the route then swaps each marker, quotes
  included, for the bare number ``12.5``. The nonce (a secret of the process and a count)
  is fresh for every request and unknown to clients, so no text a client stored can pass
  for a marker. Outside such a request (tests, the CLI) it gives a :class:`JsonNumber`: a
  float that still knows its exact text.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import WithJsonSchema

from keyplane.domain import money


class JsonNumber(float):
    """A JSON number that remembers how it was written (``text``), so nothing is rounded."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type[float], tuple[float]]:
        # Pickled and copied as the plain float it is to everything but the credits parser.
        return float, (float(self),)


def exact_text(value: object) -> object:
    """The value to read an amount from: a parsed JSON number's own text, else the value."""
    return value.text if isinstance(value, JsonNumber) else value


#: ``json.loads(..., parse_float=JsonNumber)`` makes a decoder on every call, which costs more
#: than decoding a verify body; this one is made once (decoders keep no state between calls).
_DECODER = json.JSONDecoder(parse_float=JsonNumber)


def loads_exact(data: str | bytes) -> Any:
    """``json.loads(data, parse_float=JsonNumber)``: the same text decoded the same way, with
    the same errors (an encoding detected from bytes, a UTF-8 BOM refused in text)."""
    if isinstance(data, bytes):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    elif data.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
    return _DECODER.decode(data)


_MARK: ContextVar[str | None] = ContextVar("keyplane_exact_mark", default=None)
#: A request's mark: this process's secret, then a count, so it is fresh for every request and
#: unknown to clients without reading the system's randomness each time.
_MARK_SECRET = secrets.token_hex(8)
_MARK_COUNT = itertools.count()
_MARKED = re.compile(rb'"(kp-exact-[0-9a-f]{32}:)(-?[0-9]+\.[0-9]+)"')


def credits(micros: int) -> Any:
    """Micro-credits as the API shows credits: an exact JSON number (see the module doc)."""
    text = money.to_text(micros)
    mark = _MARK.get()
    return JsonNumber(text) if mark is None else mark + text


def optional_credits(micros: int | None) -> Any:
    return None if micros is None else credits(micros)


#: A response field holding :func:`credits`; documented as the JSON number it becomes.
CreditsOut = Annotated[float | str, WithJsonSchema({"type": "number"})]


class ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_exact(await self.body())
        return self._json


class ExactJsonRoute(APIRoute):
    """A route whose body numbers keep their text and whose credits render exactly."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await exactly(handler(ExactJsonRequest(request.scope, request.receive)))

        return handle


async def exactly(answer: Awaitable[Response]) -> Response:
    """The response ``answer`` gives, its :func:`credits` rendered as exact numbers.

    What :class:`ExactJsonRoute` does around its handler; the lean data plane
    (``api/data_plane.py``) does it around the route's endpoint, which it calls directly.
    """
    mark = f"kp-exact-{_MARK_SECRET}{next(_MARK_COUNT):016x}:"
    token = _MARK.set(mark)
    try:
        response = await answer
    finally:
        _MARK.reset(token)
    return unmark(response, mark)


def unmark(response: Response, mark: str) -> Response:
    """``response`` with this request's credit markers replaced by bare JSON numbers."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes) or mark.encode("ascii") not in body:
        return response
    response.body = _unmarked(body, mark)
    response.headers["content-length"] = str(len(response.body))
    return response


def _unmarked(body: bytes, mark: str) -> bytes:
    wanted = mark.encode("ascii")

    def swap(found: re.Match[bytes]) -> bytes:
        return found[2] if found[1] == wanted else found[0]

    return _MARKED.sub(swap, body)
