"""Reading the live usage stream's Server-Sent Events, for both clients."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import httpx

from keyplane.client import _core, errors, models


def request(
    key_id: str | None,
    project_id: str | None,
    owner: str | None,
    min_cost: Decimal | int | float | str | None,
) -> tuple[str, dict[str, str]]:
    """The path and query of the stream asked for."""
    params: dict[str, str] = {}
    if project_id is not None:
        params["project_id"] = project_id
    if owner is not None:
        params["owner"] = owner
    if min_cost is not None:
        params["min_cost"] = _core.credits(min_cost)
    if key_id is not None and not params:
        return f"/v1/keys/{key_id}/usage/stream", params
    if key_id is not None:
        params["key_id"] = key_id
    return "/v1/usage/stream", params


def timeout(config: _core.Config) -> httpx.Timeout:
    """The client's timeouts, but a read may wait as long as the stream is quiet."""
    return httpx.Timeout(config.timeout, read=None)


class Parser:
    """Turns the stream's lines into events; raises StreamDroppedError at a drop notice."""

    def __init__(self) -> None:
        self._name = "message"
        self._data: list[str] = []

    def feed(self, lines: Iterable[str]) -> Iterator[models.UsageStreamEvent]:
        for line in lines:
            event = self.line(line)
            if event is not None:
                yield event

    def line(self, line: str) -> models.UsageStreamEvent | None:
        if line == "":
            name, data = self._name, "\n".join(self._data)
            self._name, self._data = "message", []
            return self._dispatch(name, data) if data else None
        if line.startswith(":"):
            return None  # a comment: the opening line or a keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None

    @staticmethod
    def _dispatch(name: str, data: str) -> models.UsageStreamEvent | None:
        payload: Any = models.parse_json(data)
        if name == "dropped":
            raise errors.StreamDroppedError(int(payload.get("missed", 0)))
        if name == "usage":
            return models.UsageStreamEvent.model_validate(payload)
        return None  # a kind of message this client does not know yet
