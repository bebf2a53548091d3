"""A tiny MaxMind DB (``.mmdb``) writer for tests: IPv4 networks mapped to country codes.

Written by hand from the format's specification (maxmind.github.io/MaxMind-DB): a binary
search tree of 24-bit records, 16 zero bytes, a data section, then the metadata map after
``\\xab\\xcd\\xefMaxMind.com``. Only what the country lookups need: maps, UTF-8 strings,
unsigned integers and arrays. Real databases are read by the same ``maxminddb`` reader.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

_RECORD_BYTES = 3  # record size 24 bits

_UINT16, _UINT32, _UINT64 = 5, 6, 9


class _Uint:
    def __init__(self, kind: int, value: int) -> None:
        self.kind = kind
        self.value = value


def _control(kind: int, size: int) -> bytes:
    assert size < 29
    if kind <= 7:
        return bytes([(kind << 5) | size])
    return bytes([size, kind - 7])  # an extended type: its number minus 7 in the next byte


def _encode(value: Any) -> bytes:
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _control(2, len(raw)) + raw
    if isinstance(value, _Uint):
        raw = value.value.to_bytes((value.value.bit_length() + 7) // 8, "big")
        return _control(value.kind, len(raw)) + raw
    if isinstance(value, dict):
        body = b"".join(_encode(k) + _encode(v) for k, v in value.items())
        return _control(7, len(value)) + body
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(_encode(item) for item in value)
    raise TypeError(type(value))


def build(countries: dict[str, str]) -> bytes:
    """An IPv4 country database: ``{"203.0.113.0/24": "DE", ...}``."""
    data = b""
    offsets: dict[str, int] = {}
    for code in sorted(set(countries.values())):
        offsets[code] = len(data)
        data += _encode({"country": {"iso_code": code}})
    nodes: list[list[Any]] = [[None, None]]
    for cidr, code in countries.items():
        network = ipaddress.IPv4Network(cidr)
        bits = int(network.network_address)
        node = 0
        for depth in range(network.prefixlen):
            bit = (bits >> (31 - depth)) & 1
            if depth == network.prefixlen - 1:
                nodes[node][bit] = ("data", offsets[code])
                break
            child = nodes[node][bit]
            if not isinstance(child, int):
                nodes.append([None, None])
                child = len(nodes) - 1
                nodes[node][bit] = child
            node = child
    count = len(nodes)

    def record(value: Any) -> int:
        if value is None:
            return count  # "no data"
        if isinstance(value, int):
            return value
        return count + 16 + value[1]

    tree = b"".join(
        record(left).to_bytes(_RECORD_BYTES, "big") + record(right).to_bytes(_RECORD_BYTES, "big")
        for left, right in nodes
    )
    metadata = {
        "node_count": _Uint(_UINT32, count),
        "record_size": _Uint(_UINT16, 24),
        "ip_version": _Uint(_UINT16, 4),
        "database_type": "Keyplane-Test-Country",
        "languages": ["en"],
        "binary_format_major_version": _Uint(_UINT16, 2),
        "binary_format_minor_version": _Uint(_UINT16, 0),
        "build_epoch": _Uint(_UINT64, 1_780_000_000),
        "description": {"en": "test countries"},
    }
    return tree + bytes(16) + data + b"\xab\xcd\xefMaxMind.com" + _encode(metadata)


def write(path: Path, countries: dict[str, str]) -> Path:
    path.write_bytes(build(countries))
    return path
