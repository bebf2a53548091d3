"""Upstream credentials: providers, capacity rules and lease strategies (pure).

An upstream credential is one of the operator's own provider keys (an OpenAI key, an
Anthropic key, ...). The gateway leases one for a call; a lease holds one concurrency slot
until it is released or expires, and costs one unit of the credential's daily and monthly
allowance when it is taken.

Everything here is a function of a record, a count of live leases and the time: the store
locks the candidate rows and asks these functions which one to take, so the same rules hold
on every backend.
"""

from __future__ import annotations

import difflib
import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

#: The providers the seed's package knows (matched case-insensitively); ``custom`` is
#: everything else. A typo of a known name is refused rather than silently filed as custom.
PROVIDERS = frozenset(
    {
        # AI / LLM
        "openai",
        "anthropic",
        "google_gemini",
        "google_vertex",
        "mistral",
        "cohere",
        "huggingface",
        "replicate",
        "together_ai",
        "groq",
        "fireworks",
        "deepseek",
        "xai",
        "perplexity",
        "openrouter",
        "lemofox",
        # speech / audio
        "deepgram",
        "eleven_labs",
        "assembly_ai",
        "whisper",
        # cloud and auth
        "aws",
        "azure",
        "gcp",
        "cloudflare",
        "vercel",
        "auth0",
        "clerk",
        "supabase_auth",
        # communication
        "twilio",
        "sendgrid",
        "mailgun",
        "resend",
        "postmark",
        # payments
        "stripe",
        "razorpay",
        "paypal",
        "lemonsqueezy",
        # search and vector
        "serp_api",
        "bing_search",
        "algolia",
        "pinecone",
        "weaviate",
        # misc
        "github",
        "slack",
        "discord",
        "custom",
    }
)
MAX_PROVIDER_LENGTH = 40
#: Default cool-down after a ``rate_limited`` outcome without a retry-after.
DEFAULT_COOLDOWN = timedelta(seconds=60)
MAX_COOLDOWN = timedelta(days=1)
DEFAULT_LEASE_TTL = timedelta(seconds=60)
MAX_LEASE_TTL = timedelta(hours=1)


class CredentialStatus(enum.StrEnum):
    """Stored status. ``cooling_down`` is derived: active with a cool-down still running."""

    ACTIVE = "active"
    COOLING_DOWN = "cooling_down"
    DISABLED = "disabled"
    REVOKED = "revoked"


class Strategy(enum.StrEnum):
    """How a lease picks among the credentials with capacity."""

    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    RANDOM = "random"
    LEAST_USED = "least_used"


class Outcome(enum.StrEnum):
    """What the holder of a lease reports when it gives it back."""

    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"


class Refusal(enum.StrEnum):
    """Why nothing could be leased; stable codes clients can switch on."""

    NO_CREDENTIAL = "NO_CREDENTIAL"
    ALL_RATE_LIMITED = "ALL_RATE_LIMITED"
    ALL_AT_MAX_CONCURRENCY = "ALL_AT_MAX_CONCURRENCY"


#: Common other names of known providers, each standing for one of them.
PROVIDER_ALIASES = {
    "gemini": "google_gemini",
    "google_ai": "google_gemini",
    "vertex": "google_vertex",
    "vertex_ai": "google_vertex",
    "claude": "anthropic",
    "hf": "huggingface",
    "hugging_face": "huggingface",
    "together": "together_ai",
    "togetherai": "together_ai",
    "fireworks_ai": "fireworks",
    "grok": "xai",
    "x_ai": "xai",
    "elevenlabs": "eleven_labs",
    "assemblyai": "assembly_ai",
    "google_cloud": "gcp",
    "serpapi": "serp_api",
}
#: Names that could mean several providers: refused, with the choices in the message.
AMBIGUOUS_PROVIDERS = {
    "google": ("google_gemini", "google_vertex", "gcp"),
}
#: Every name :func:`normalize_provider` accepts (after case folding and ``-``/space to ``_``).
ACCEPTED_PROVIDER_NAMES = PROVIDERS | PROVIDER_ALIASES.keys()


def normalize_provider(text: str) -> str:
    """The canonical provider name for ``text``.

    Known names match case-insensitively, with ``-`` and spaces read as ``_``
    (``Google-Gemini`` is ``google_gemini``); common aliases map to theirs (``gemini`` is
    ``google_gemini``, ``claude`` is ``anthropic``).

    Raises:
        ValueError: not a known provider, or an ambiguous one (``google``); the message
            suggests the closest one or the choices, or ``custom``.
    """
    canonical = text.strip().lower().replace("-", "_").replace(" ", "_")
    if canonical in PROVIDERS:
        return canonical
    if canonical in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[canonical]
    shown = ascii(text[:MAX_PROVIDER_LENGTH])
    if canonical in AMBIGUOUS_PROVIDERS:
        choices = " or ".join(repr(name) for name in AMBIGUOUS_PROVIDERS[canonical])
        raise ValueError(f"provider {shown} is ambiguous: use {choices}")
    close = difflib.get_close_matches(canonical, sorted(ACCEPTED_PROVIDER_NAMES), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown provider {shown}: {hint}use 'custom' for a provider not listed")


def mask_secret(secret: str) -> str:
    """First and last characters only; short secrets show less so that little leaks."""
    if len(secret) >= 16:
        return f"{secret[:4]}...{secret[-4:]}"
    if len(secret) >= 8:
        return f"{secret[:1]}...{secret[-1:]}"
    return "..."


def day_start(now: datetime) -> datetime:
    """Start of the UTC day of ``now``."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def month_start(now: datetime) -> datetime:
    """Start of the UTC month of ``now``."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def next_day(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A stored upstream credential. ``sealed_secret`` is the envelope token, never plaintext.

    Usage counters keep the start of the period they count next to the count: a counter from
    an earlier day or month reads as 0, so resets at UTC boundaries are exact and need no job.
    """

    id: str
    org_id: str
    provider: str
    alias: str
    sealed_secret: str
    master_key_id: str
    secret_hint: str
    environment: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    weight: int
    daily_limit: int | None
    monthly_limit: int | None
    max_concurrent: int | None
    status: CredentialStatus
    created_at: datetime
    updated_at: datetime
    cooldown_until: datetime | None = None
    status_reason: str | None = None
    day_start: datetime | None = None
    day_count: int = 0
    month_start: datetime | None = None
    month_count: int = 0
    total_count: int = 0
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    #: The project it belongs to; ``None``: the organization's (org-wide).
    project_id: str | None = None
    #: Org-wide only: project-bound keys may use it too (see :meth:`reachable_from`).
    shared_with_projects: bool = False

    def reachable_from(self, project_id: str | None) -> bool:
        """Whether a caller bound to ``project_id`` (``None``: org-wide) may see and lease it.

        The store applies the same rule in SQL, inside its selecting and locking statements
        (``SqlVaultStore``); this is its reference, for tests and in-memory checks.
        """
        if project_id is None or self.project_id == project_id:
            return True
        return self.project_id is None and self.shared_with_projects

    def daily_used(self, now: datetime) -> int:
        return self.day_count if self.day_start == day_start(now) else 0

    def monthly_used(self, now: datetime) -> int:
        return self.month_count if self.month_start == month_start(now) else 0

    def daily_remaining(self, now: datetime) -> int | None:
        if self.daily_limit is None:
            return None
        return max(0, self.daily_limit - self.daily_used(now))

    def monthly_remaining(self, now: datetime) -> int | None:
        if self.monthly_limit is None:
            return None
        return max(0, self.monthly_limit - self.monthly_used(now))

    def effective_status(self, now: datetime) -> CredentialStatus:
        if (
            self.status is CredentialStatus.ACTIVE
            and self.cooldown_until is not None
            and self.cooldown_until > now
        ):
            return CredentialStatus.COOLING_DOWN
        return self.status

    def exhausted(self, now: datetime) -> bool:
        """No daily or monthly allowance left (a 0 limit is always exhausted)."""
        return self.daily_remaining(now) == 0 or self.monthly_remaining(now) == 0

    def allowance_returns(self, now: datetime) -> datetime | None:
        """When an exhausted credential may be leased again by its limits alone (the next
        UTC day or month); ``None`` when it is not exhausted or a 0 limit blocks it for good."""
        if not self.exhausted(now) or self.daily_limit == 0 or self.monthly_limit == 0:
            return None
        if self.monthly_remaining(now) == 0:
            return next_month(now)
        return next_day(now)

    def at_max_concurrency(self, live_leases: int) -> bool:
        return self.max_concurrent is not None and live_leases >= self.max_concurrent

    def has_capacity(self, live_leases: int, now: datetime) -> bool:
        """Could a lease be taken on it right now?"""
        return (
            self.effective_status(now) is CredentialStatus.ACTIVE
            and not self.exhausted(now)
            and not self.at_max_concurrency(live_leases)
        )

    def used_once(self, now: datetime) -> CredentialRecord:
        """The record after one more lease at ``now`` (counters roll over at boundaries)."""
        return replace(
            self,
            day_start=day_start(now),
            day_count=self.daily_used(now) + 1,
            month_start=month_start(now),
            month_count=self.monthly_used(now) + 1,
            total_count=self.total_count + 1,
            last_used_at=now,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A credential that matches a lease request, with its live lease count."""

    record: CredentialRecord
    live_leases: int
    #: When the earliest of its live leases expires (frees a slot), if it has any.
    next_expiry: datetime | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """The outcome of :func:`choose`: a credential, or why none, with a retry hint."""

    record: CredentialRecord | None
    refusal: Refusal | None = None
    retry_after: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)


def choose(
    candidates: Sequence[Candidate],
    strategy: Strategy,
    now: datetime,
    rng: random.Random | None = None,
) -> Choice:
    """Pick a credential with capacity by ``strategy``, or say why none can be leased.

    Refusals: ``ALL_AT_MAX_CONCURRENCY`` when some usable credential only lacks a free slot
    (retry when the earliest lease expires); else ``ALL_RATE_LIMITED`` when some are cooling
    down (retry when the earliest cool-down ends); else ``NO_CREDENTIAL`` (none match, or all
    are disabled, revoked or out of allowance; retry at the next UTC day or month when that
    brings allowance back).
    """
    rng = rng or _RANDOM
    usable = [c for c in candidates if c.record.has_capacity(c.live_leases, now)]
    if usable:
        return Choice(_pick(usable, strategy, now, rng).record)
    busy = [
        c
        for c in candidates
        if c.record.effective_status(now) is CredentialStatus.ACTIVE and not c.record.exhausted(now)
    ]
    if busy:
        expiries = [c.next_expiry for c in busy if c.next_expiry is not None]
        return (
            Choice(None, Refusal.ALL_AT_MAX_CONCURRENCY, _seconds_until(min(expiries), now))
            if expiries
            else Choice(None, Refusal.ALL_AT_MAX_CONCURRENCY, 1)
        )
    cooling = [
        c.record.cooldown_until
        for c in candidates
        if c.record.effective_status(now) is CredentialStatus.COOLING_DOWN
        and c.record.cooldown_until is not None
        and not c.record.exhausted(now)
    ]
    if cooling:
        return Choice(None, Refusal.ALL_RATE_LIMITED, _seconds_until(min(cooling), now))
    refills = [when for c in candidates if (when := c.record.allowance_returns(now)) is not None]
    retry = _seconds_until(min(refills), now) if refills else None
    return Choice(None, Refusal.NO_CREDENTIAL, retry)


def _pick(
    usable: Sequence[Candidate], strategy: Strategy, now: datetime, rng: random.Random
) -> Candidate:
    if strategy is Strategy.ROUND_ROBIN:
        # The least recently leased goes next; never-used ones first, then by id (creation
        # order), so n credentials are each leased once every n leases.
        return min(usable, key=lambda c: (c.record.last_used_at or _EPOCH, c.record.id))
    if strategy is Strategy.LEAST_USED:
        # Fewest leases today, then this month, then in total; ties by least recent use.
        return min(
            usable,
            key=lambda c: (
                c.record.daily_used(now),
                c.record.monthly_used(now),
                c.record.total_count,
                c.record.last_used_at or _EPOCH,
                c.record.id,
            ),
        )
    if strategy is Strategy.WEIGHTED:
        weights = [c.record.weight for c in usable]
        if sum(weights) > 0:
            return rng.choices(list(usable), weights=weights, k=1)[0]
    return rng.choice(list(usable))


def _seconds_until(when: datetime, now: datetime) -> int:
    return max(1, int((when - now).total_seconds() + 0.999))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Lease picks need no unpredictability against an attacker, only spread.
_RANDOM = random.Random()  # noqa: S311
