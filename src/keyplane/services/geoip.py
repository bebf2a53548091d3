"""The client's country from a local MaxMind or DB-IP ``.mmdb`` database (``network.countries_*``).

Read with MaxMind's ``maxminddb`` reader, loaded whole into memory at start-up: a lookup is a
walk of an in-memory search tree (microseconds), so verify does no I/O for it. Asked only when
a key has country rules and the gateway did not say the country itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb

from keyplane.errors import ConfigurationError


class GeoIp:
    """Country lookups in one ``.mmdb`` file (GeoLite2/GeoIP2 Country or City, DB-IP)."""

    def __init__(self, path: Path) -> None:
        try:
            self._reader = maxminddb.open_database(str(path), maxminddb.MODE_MEMORY)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            # The message names the setting and the failure's type, not the file's content.
            raise ConfigurationError(
                f"KEYPLANE_GEOIP_DATABASE could not be read ({type(exc).__name__})"
            ) from None

    def country(self, ip: str) -> str | None:
        """The ISO 3166-1 alpha-2 code (upper case) of ``ip``, or ``None`` when unknown."""
        try:
            record = self._reader.get(ip)
        except (ValueError, TypeError):
            return None
        return _iso_code(record)

    def close(self) -> None:
        self._reader.close()


def _iso_code(record: Any) -> str | None:
    # GeoIP2/GeoLite2 and DB-IP write {"country": {"iso_code": "DE", ...}}; a few country-only
    # databases write {"country_code": "DE"} instead.
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else record.get("country_code")
    if not isinstance(code, str) or len(code) != 2 or not code.isascii():
        return None
    return code.upper()
