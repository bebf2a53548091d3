from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Key(_message.Message):
    __slots__ = ("id", "hash", "start", "end", "org_id", "project_id", "name", "label", "description", "owner", "environment", "tags", "metadata_json", "scopes", "status", "disabled_reason", "auto_enable_at", "revoked_reason", "revoked_at", "expires_at", "created_at", "updated_at", "last_used_at", "plan", "policy_json", "effective_policy_json", "usage", "limit", "limit_remaining")
    ID_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DISABLED_REASON_FIELD_NUMBER: _ClassVar[int]
    AUTO_ENABLE_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_REASON_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_REMAINING_FIELD_NUMBER: _ClassVar[int]
    id: str
    hash: str
    start: str
    end: str
    org_id: str
    project_id: str
    name: str
    label: str
    description: str
    owner: str
    environment: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    status: str
    disabled_reason: str
    auto_enable_at: str
    revoked_reason: str
    revoked_at: str
    expires_at: str
    created_at: str
    updated_at: str
    last_used_at: str
    plan: str
    policy_json: str
    effective_policy_json: str
    usage: Usage
    limit: str
    limit_remaining: str
    def __init__(self, id: _Optional[str] = ..., hash: _Optional[str] = ..., start: _Optional[str] = ..., end: _Optional[str] = ..., org_id: _Optional[str] = ..., project_id: _Optional[str] = ..., name: _Optional[str] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., owner: _Optional[str] = ..., environment: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., status: _Optional[str] = ..., disabled_reason: _Optional[str] = ..., auto_enable_at: _Optional[str] = ..., revoked_reason: _Optional[str] = ..., revoked_at: _Optional[str] = ..., expires_at: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., last_used_at: _Optional[str] = ..., plan: _Optional[str] = ..., policy_json: _Optional[str] = ..., effective_policy_json: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., limit: _Optional[str] = ..., limit_remaining: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("total", "daily", "weekly", "monthly")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DAILY_FIELD_NUMBER: _ClassVar[int]
    WEEKLY_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_FIELD_NUMBER: _ClassVar[int]
    total: str
    daily: str
    weekly: str
    monthly: str
    def __init__(self, total: _Optional[str] = ..., daily: _Optional[str] = ..., weekly: _Optional[str] = ..., monthly: _Optional[str] = ...) -> None: ...

class KeyRef(_message.Message):
    __slots__ = ("id_or_hash",)
    ID_OR_HASH_FIELD_NUMBER: _ClassVar[int]
    id_or_hash: str
    def __init__(self, id_or_hash: _Optional[str] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "environment", "project_id", "label", "description", "owner", "tags", "metadata_json", "scopes", "expires_at", "plan", "policy_json", "idempotency_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    environment: str
    project_id: str
    label: str
    description: str
    owner: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    expires_at: str
    plan: str
    policy_json: str
    idempotency_key: str
    def __init__(self, name: _Optional[str] = ..., environment: _Optional[str] = ..., project_id: _Optional[str] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., owner: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., expires_at: _Optional[str] = ..., plan: _Optional[str] = ..., policy_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class IssuedKey(_message.Message):
    __slots__ = ("secret", "key", "replayed", "signing_secret")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    SIGNING_SECRET_FIELD_NUMBER: _ClassVar[int]
    secret: str
    key: Key
    replayed: bool
    signing_secret: str
    def __init__(self, secret: _Optional[str] = ..., key: _Optional[_Union[Key, _Mapping]] = ..., replayed: _Optional[bool] = ..., signing_secret: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("owner", "tag", "environment", "status", "project", "name", "cursor", "limit")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    owner: str
    tag: str
    environment: str
    status: str
    project: str
    name: str
    cursor: str
    limit: int
    def __init__(self, owner: _Optional[str] = ..., tag: _Optional[str] = ..., environment: _Optional[str] = ..., status: _Optional[str] = ..., project: _Optional[str] = ..., name: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class KeyPage(_message.Message):
    __slots__ = ("keys", "next_cursor", "has_more")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    next_cursor: str
    has_more: bool
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., has_more: _Optional[bool] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("id_or_hash", "name", "label", "description", "owner", "tags", "set_tags", "metadata_json", "scopes", "set_scopes", "expires_at", "plan", "policy_json", "clear")
    ID_OR_HASH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SET_TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    SET_SCOPES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    id_or_hash: str
    name: str
    label: str
    description: str
    owner: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    set_tags: bool
    metadata_json: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    set_scopes: bool
    expires_at: str
    plan: str
    policy_json: str
    clear: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id_or_hash: _Optional[str] = ..., name: _Optional[str] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., owner: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., set_tags: _Optional[bool] = ..., metadata_json: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., set_scopes: _Optional[bool] = ..., expires_at: _Optional[str] = ..., plan: _Optional[str] = ..., policy_json: _Optional[str] = ..., clear: _Optional[_Iterable[str]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("id_or_hash", "grace_period_seconds")
    ID_OR_HASH_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id_or_hash: str
    grace_period_seconds: int
    def __init__(self, id_or_hash: _Optional[str] = ..., grace_period_seconds: _Optional[int] = ...) -> None: ...

class DisableKeyRequest(_message.Message):
    __slots__ = ("id_or_hash", "reason", "auto_enable_after")
    ID_OR_HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTO_ENABLE_AFTER_FIELD_NUMBER: _ClassVar[int]
    id_or_hash: str
    reason: str
    auto_enable_after: int
    def __init__(self, id_or_hash: _Optional[str] = ..., reason: _Optional[str] = ..., auto_enable_after: _Optional[int] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("id_or_hash", "reason")
    ID_OR_HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id_or_hash: str
    reason: str
    def __init__(self, id_or_hash: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("key", "scopes", "request_id", "model", "ip", "origin", "referrer", "user_agent", "cost", "tokens_in", "tokens_out", "acquire_concurrency", "scheme", "country", "signature", "feature", "features", "operation", "provider", "auto_routing", "fallback", "wait_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    REFERRER_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AUTO_ROUTING_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    model: str
    ip: str
    origin: str
    referrer: str
    user_agent: str
    cost: str
    tokens_in: int
    tokens_out: int
    acquire_concurrency: bool
    scheme: str
    country: str
    signature: Signature
    feature: str
    features: _containers.RepeatedScalarFieldContainer[str]
    operation: str
    provider: str
    auto_routing: bool
    fallback: bool
    wait_ms: int
    def __init__(self, key: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., ip: _Optional[str] = ..., origin: _Optional[str] = ..., referrer: _Optional[str] = ..., user_agent: _Optional[str] = ..., cost: _Optional[str] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., acquire_concurrency: _Optional[bool] = ..., scheme: _Optional[str] = ..., country: _Optional[str] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ..., feature: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., operation: _Optional[str] = ..., provider: _Optional[str] = ..., auto_routing: _Optional[bool] = ..., fallback: _Optional[bool] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("signature", "method", "path", "query", "timestamp", "nonce", "body_sha256")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    BODY_SHA256_FIELD_NUMBER: _ClassVar[int]
    signature: str
    method: str
    path: str
    query: str
    timestamp: str
    nonce: str
    body_sha256: str
    def __init__(self, signature: _Optional[str] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., query: _Optional[str] = ..., timestamp: _Optional[str] = ..., nonce: _Optional[str] = ..., body_sha256: _Optional[str] = ...) -> None: ...

class Limit(_message.Message):
    __slots__ = ("name", "kind", "limit", "remaining", "reset_at", "carry")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AT_FIELD_NUMBER: _ClassVar[int]
    CARRY_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    limit: str
    remaining: str
    reset_at: str
    carry: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., limit: _Optional[str] = ..., remaining: _Optional[str] = ..., reset_at: _Optional[str] = ..., carry: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("valid", "code", "key_id", "owner", "name", "environment", "tags", "metadata_json", "scopes", "expires_at", "plan", "request_id", "limits", "retry_after", "directives_json", "rotation_pending")
    VALID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVES_JSON_FIELD_NUMBER: _ClassVar[int]
    ROTATION_PENDING_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    code: str
    key_id: str
    owner: str
    name: str
    environment: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    expires_at: str
    plan: str
    request_id: str
    limits: _containers.RepeatedCompositeFieldContainer[Limit]
    retry_after: float
    directives_json: str
    rotation_pending: bool
    def __init__(self, valid: _Optional[bool] = ..., code: _Optional[str] = ..., key_id: _Optional[str] = ..., owner: _Optional[str] = ..., name: _Optional[str] = ..., environment: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., expires_at: _Optional[str] = ..., plan: _Optional[str] = ..., request_id: _Optional[str] = ..., limits: _Optional[_Iterable[_Union[Limit, _Mapping]]] = ..., retry_after: _Optional[float] = ..., directives_json: _Optional[str] = ..., rotation_pending: _Optional[bool] = ...) -> None: ...
