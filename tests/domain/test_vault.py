"""Pure vault rules: providers, masking, counters at UTC boundaries, strategies, refusals."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from keyplane.domain.vault import (
    Candidate,
    CredentialRecord,
    CredentialStatus,
    Refusal,
    Strategy,
    choose,
    mask_secret,
    next_month,
    normalize_provider,
)

NOW = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)


def record(n: int, **fields: object) -> CredentialRecord:
    base = CredentialRecord(
        id=f"cred_{n:026d}",
        org_id="org_x",
        provider="openai",
        alias=f"c{n}",
        sealed_secret="kpv1.x.y.z",
        master_key_id="0" * 16,
        secret_hint="...",
        environment=None,
        tags=(),
        metadata={},
        weight=1,
        daily_limit=None,
        monthly_limit=None,
        max_concurrent=None,
        status=CredentialStatus.ACTIVE,
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [("OpenAI", "openai"), ("google-gemini", "google_gemini"), ("Together AI", "together_ai")],
)
def test_known_providers_match_case_insensitively(given: str, expected: str) -> None:
    assert normalize_provider(given) == expected


def test_a_misspelt_provider_gets_a_hint_and_never_becomes_custom_silently() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'anthropic'.*custom"):
        normalize_provider("antrhopic")
    with pytest.raises(ValueError, match="use 'custom'"):
        normalize_provider("zzzz-provider")


def test_masks_show_only_the_ends() -> None:
    assert mask_secret("sk-proj-1234567890abcdef") == "sk-p...cdef"
    assert mask_secret("abcdefghij") == "a...j"
    assert mask_secret("short") == "..."


def test_counters_of_an_earlier_day_or_month_read_as_zero() -> None:
    used = record(1, daily_limit=1, monthly_limit=2).used_once(NOW)
    assert used.exhausted(NOW)
    next_day = NOW + timedelta(seconds=1)  # 2026-04-01 00:00:00: new day and new month
    assert (used.daily_used(next_day), used.monthly_used(next_day)) == (0, 0)
    assert not used.exhausted(next_day)
    assert next_month(NOW) == datetime(2026, 4, 1, tzinfo=UTC)
    assert next_month(datetime(2026, 12, 31, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_zero_limit_blocks() -> None:
    assert record(1, daily_limit=0).exhausted(NOW)
    assert not record(1, max_concurrent=0).has_capacity(0, NOW)


def test_round_robin_cycles_evenly() -> None:
    records = {n: record(n) for n in range(3)}
    picks = []
    now = NOW
    for _ in range(9):
        choice = choose([Candidate(r, 0) for r in records.values()], Strategy.ROUND_ROBIN, now)
        assert choice.record is not None
        picks.append(choice.record.alias)
        records[int(choice.record.alias[1:])] = choice.record.used_once(now)
        now += timedelta(milliseconds=1)
    assert picks == ["c0", "c1", "c2"] * 3


def test_weighted_follows_the_weights() -> None:
    rng = random.Random(7)
    candidates = [Candidate(record(1, weight=1), 0), Candidate(record(2, weight=3), 0)]
    counts: Counter[str] = Counter()
    for _ in range(4000):
        choice = choose(candidates, Strategy.WEIGHTED, NOW, rng)
        assert choice.record is not None
        counts[choice.record.alias] += 1
    # Expected 0.75; the standard deviation at n=4000 is 0.007, so this is > 5 sigma wide.
    assert abs(counts["c2"] / 4000 - 0.75) < 0.04
    zero = [Candidate(record(1, weight=0), 0), Candidate(record(2, weight=1), 0)]
    assert {choose(zero, Strategy.WEIGHTED, NOW, rng).record.alias for _ in range(50)} == {  # type: ignore[union-attr]
        "c2"
    }


def test_random_spreads_over_all() -> None:
    rng = random.Random(3)
    candidates = [Candidate(record(n), 0) for n in range(3)]
    seen = {choose(candidates, Strategy.RANDOM, NOW, rng).record.alias for _ in range(100)}  # type: ignore[union-attr]
    assert seen == {"c0", "c1", "c2"}


def test_least_used_picks_the_least_used() -> None:
    busy = record(1)
    for _ in range(5):
        busy = busy.used_once(NOW)
    idle = record(2).used_once(NOW)
    choice = choose([Candidate(busy, 0), Candidate(idle, 0)], Strategy.LEAST_USED, NOW)
    assert choice.record is not None and choice.record.alias == "c2"


def test_cooling_exhausted_and_full_credentials_are_skipped() -> None:
    cooling = record(1, cooldown_until=NOW + timedelta(seconds=30))
    exhausted = record(2, daily_limit=1).used_once(NOW)
    full = record(3, max_concurrent=1)
    free = record(4)
    candidates = [Candidate(cooling, 0), Candidate(exhausted, 0), Candidate(full, 1)]
    for strategy in Strategy:
        choice = choose([*candidates, Candidate(free, 0)], strategy, NOW)
        assert choice.record is not None and choice.record.alias == "c4"


def test_refusals_say_why_and_when() -> None:
    full = Candidate(record(1, max_concurrent=1), 1, NOW + timedelta(seconds=12))
    cooling = Candidate(record(2, cooldown_until=NOW + timedelta(seconds=30)), 0)
    exhausted = Candidate(record(3, daily_limit=0), 0)
    assert choose([], Strategy.ROUND_ROBIN, NOW).refusal is Refusal.NO_CREDENTIAL
    assert choose([exhausted], Strategy.ROUND_ROBIN, NOW).refusal is Refusal.NO_CREDENTIAL
    rate_limited = choose([cooling, exhausted], Strategy.ROUND_ROBIN, NOW)
    assert (rate_limited.refusal, rate_limited.retry_after) == (Refusal.ALL_RATE_LIMITED, 30)
    busy = choose([full, cooling, exhausted], Strategy.ROUND_ROBIN, NOW)
    assert (busy.refusal, busy.retry_after) == (Refusal.ALL_AT_MAX_CONCURRENCY, 12)


def test_spent_allowance_says_when_it_returns() -> None:
    daily = Candidate(record(1, daily_limit=1).used_once(NOW), 0)
    refusal = choose([daily], Strategy.ROUND_ROBIN, NOW)
    assert (refusal.refusal, refusal.retry_after) == (Refusal.NO_CREDENTIAL, 1)  # midnight
    noon = datetime(2026, 3, 15, 12, tzinfo=UTC)
    monthly = Candidate(record(2, monthly_limit=1).used_once(noon), 0)
    expected = int((datetime(2026, 4, 1, tzinfo=UTC) - noon).total_seconds())
    assert choose([monthly], Strategy.ROUND_ROBIN, noon).retry_after == expected
    blocked = Candidate(record(3, daily_limit=0), 0)
    assert choose([blocked], Strategy.ROUND_ROBIN, NOW).retry_after is None


@pytest.mark.parametrize(
    ("project_id", "shared", "caller", "reached"),
    [
        ("proj_a", False, None, True),  # org-wide callers reach everything
        (None, False, None, True),
        ("proj_a", False, "proj_a", True),  # its own project's
        ("proj_a", True, "proj_b", False),  # sharing is for org-wide credentials only
        ("proj_b", False, "proj_a", False),
        (None, False, "proj_a", False),  # org-wide, not shared: the organization's own
        (None, True, "proj_a", True),  # org-wide, shared with projects
    ],
)
def test_who_reaches_a_credential(
    project_id: str | None, shared: bool, caller: str | None, reached: bool
) -> None:
    credential = record(1, project_id=project_id, shared_with_projects=shared)
    assert credential.reachable_from(caller) is reached


@pytest.mark.parametrize(
    ("given", "expected"),
    [("Gemini", "google_gemini"), ("vertex-ai", "google_vertex"), ("Claude", "anthropic")],
)
def test_common_aliases_name_their_provider(given: str, expected: str) -> None:
    assert normalize_provider(given) == expected


def test_every_alias_names_a_known_provider() -> None:
    from keyplane.domain.vault import AMBIGUOUS_PROVIDERS, PROVIDER_ALIASES, PROVIDERS

    assert set(PROVIDER_ALIASES.values()) <= PROVIDERS
    assert not PROVIDER_ALIASES.keys() & PROVIDERS
    for choices in AMBIGUOUS_PROVIDERS.values():
        assert set(choices) <= PROVIDERS


def test_an_ambiguous_provider_asks_which() -> None:
    choices = "'google_gemini' or 'google_vertex' or 'gcp'"
    with pytest.raises(ValueError, match=f"'Google' is ambiguous: use {choices}"):
        normalize_provider("Google")
