"""Plans: named policy templates (starter, pro, enterprise, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PLAN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class PlanRecord:
    id: str
    org_id: str
    name: str
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    #: A complete policy document (storage form, read and written by ``domain.policy_spec``).
    policy: dict[str, Any] = field(default_factory=dict)
