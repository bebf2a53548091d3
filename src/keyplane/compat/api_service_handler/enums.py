"""The string enums of seed 002's package that its callers pass (``Environment.PRODUCTION``)."""

from __future__ import annotations

import enum

from keyplane.domain.vault import normalize_provider


class Environment(enum.StrEnum):
    """Deployment environment a key is meant for (any Keyplane environment name works too)."""

    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"
    TESTING = "testing"


class KeyStatus(enum.StrEnum):
    """A key's status in the seed's words (Keyplane's ``disabled`` reads ``inactive``, its
    ``cooling_down`` reads ``rate_limited``)."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    RATE_LIMITED = "rate_limited"
    EXPIRED = "expired"
    REVOKED = "revoked"


class RotationStrategy(enum.StrEnum):
    """How the next key is picked (Keyplane's :class:`~keyplane.domain.vault.Strategy`)."""

    ROUND_ROBIN = "round_robin"
    LEAST_USED = "least_used"
    RANDOM = "random"
    WEIGHTED = "weighted"


class StorageBackend(enum.StrEnum):
    """Where keys are kept. ``mongodb`` is not offered: Keyplane stores in SQL only."""

    MEMORY = "memory"
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Provider(enum.StrEnum):
    """The providers Keyplane knows (the seed README's list); see :meth:`from_string`."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE_GEMINI = "google_gemini"
    GOOGLE_VERTEX = "google_vertex"
    MISTRAL = "mistral"
    COHERE = "cohere"
    HUGGINGFACE = "huggingface"
    REPLICATE = "replicate"
    TOGETHER_AI = "together_ai"
    GROQ = "groq"
    FIREWORKS = "fireworks"
    DEEPSEEK = "deepseek"
    XAI = "xai"
    PERPLEXITY = "perplexity"
    OPENROUTER = "openrouter"
    LEMOFOX = "lemofox"
    DEEPGRAM = "deepgram"
    ELEVEN_LABS = "eleven_labs"
    ASSEMBLY_AI = "assembly_ai"
    WHISPER = "whisper"
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"
    CLOUDFLARE = "cloudflare"
    VERCEL = "vercel"
    AUTH0 = "auth0"
    CLERK = "clerk"
    SUPABASE_AUTH = "supabase_auth"
    TWILIO = "twilio"
    SENDGRID = "sendgrid"
    MAILGUN = "mailgun"
    RESEND = "resend"
    POSTMARK = "postmark"
    STRIPE = "stripe"
    RAZORPAY = "razorpay"
    PAYPAL = "paypal"
    LEMONSQUEEZY = "lemonsqueezy"
    SERP_API = "serp_api"
    BING_SEARCH = "bing_search"
    ALGOLIA = "algolia"
    PINECONE = "pinecone"
    WEAVIATE = "weaviate"
    GITHUB = "github"
    SLACK = "slack"
    DISCORD = "discord"
    CUSTOM = "custom"

    @classmethod
    def from_string(cls, value: str) -> Provider:
        """The member for ``value`` in any case (``-`` or a space read as ``_``); ``CUSTOM``
        for a name not listed, as the seed falls back."""
        try:
            return cls(normalize_provider(value[:100]))
        except ValueError:
            return cls.CUSTOM
