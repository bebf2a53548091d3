"""A report's fingerprint must not change across releases: a client retrying a report recorded
by an earlier version must still be answered as the original, not as a conflict."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from keyplane.services.usage import UsageReport, fingerprint_of

_TEXT = st.one_of(st.none(), st.text(max_size=20))
_COUNT = st.integers(0, 10**12)


def _as_first_written(report: UsageReport, key_id: str) -> str:
    """The fingerprint as the first release computed it (``dataclasses.asdict``)."""
    body = {**dataclasses.asdict(report), "key": None, "key_id": key_id}
    if body["feature"] is None:
        del body["feature"]
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@given(
    st.builds(
        UsageReport,
        key_id=_TEXT,
        key=_TEXT,
        request_id=_TEXT,
        cost=_COUNT,
        input_tokens=_COUNT,
        output_tokens=_COUNT,
        model=_TEXT,
        latency_ms=st.one_of(st.none(), _COUNT),
        status=st.one_of(st.none(), st.integers(100, 599)),
        feature=_TEXT,
    ),
    st.text(min_size=1, max_size=40),
)
def test_the_fingerprint_is_the_one_earlier_releases_stored(
    report: UsageReport, key_id: str
) -> None:
    assert fingerprint_of(report, key_id) == _as_first_written(report, key_id)


def test_a_pinned_fingerprint() -> None:
    report = UsageReport(key="kp_live_secret", request_id="req-1", cost=1500, model="gpt-4")
    # What the ledger stored for this report before this function existed: a change here
    # would answer every client retry of an older report with 409 IDEMPOTENCY_KEY_REUSED.
    assert fingerprint_of(report, "key_abc") == (
        "56dbac7ed9fe63740986c5bbedc101c30a0608c6e9c36e759d1b0ca5ac744156"
    )
