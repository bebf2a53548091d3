"""Building blocks shared by the request bodies.

Rules checked by a validator are also written into the OpenAPI document (a ``pattern``, an
``enum``), so that what the document calls valid is what the server accepts; schemathesis
holds the two to each other in ``tests/api/test_schemathesis.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    model_validator,
)

from keyplane.domain import scopes, validation

#: The control characters (Unicode category Cc: C0, DEL, C1) that ``validation.check_text``
#: refuses, as a regex class body. Lone surrogates, refused as well, cannot be written in a
#: pattern; they are not text, and no JSON encoder emits them from a real string.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
#: ``check_text`` as a JSON Schema pattern.
TEXT_PATTERN = f"^[^{_CONTROL}]*$"
#: ``check_text(multiline=True)``: tab, newline and carriage return allowed.
MULTILINE_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
#: Clean text without outer whitespace, at least one character: a tag
#: (``validation.check_tags``), a vault alias or secret.
TRIMMED_PATTERN = f"^[^\\s{_CONTROL}](?:[^{_CONTROL}]*[^\\s{_CONTROL}])?$"
#: ``validation.parse_metadata_path``: dot-separated identifier-like segments.
METADATA_PATH_PATTERN = (
    f"^{validation.METADATA_PATH_SEGMENT.pattern}"
    f"(?:\\.{validation.METADATA_PATH_SEGMENT.pattern}){{0,{validation.MAX_METADATA_DEPTH - 1}}}$"
)
#: ``scopes.SCOPE_PATTERN``, anchored.
SCOPE_PATTERN = f"^{scopes.SCOPE_PATTERN.pattern}$"


def documented(**schema: Any) -> Any:
    """Write a rule that a validator enforces into the field's JSON Schema.

    The validator stays the enforcer (its message and error code are the API's); this only
    tells clients and schema-driven tools the same rule.
    """
    return Field(json_schema_extra=schema)


class _KeysByPattern:
    """Annotation for a dict whose key type has a pattern: its schema says every key must
    match (``propertyNames``), as the validator does.

    pydantic writes such a dict as ``patternProperties`` alone, which constrains the keys that
    match and lets every other key through: ``{"Bad Name": 1}`` would pass the schema and
    then be refused by the API.
    """

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        schema = handler(core)
        patterns = schema.pop("patternProperties", None)
        if patterns:
            [(pattern, value)] = patterns.items()
            schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
            schema["additionalProperties"] = value
        return schema


#: After ``Field(...)`` in ``Annotated[dict[PatternStr, V], Field(...), KeysByPattern]``.
KeysByPattern = _KeysByPattern()


def _integral(value: object) -> object:
    # JSON has one number type, and JSON Schema counts 60.0 as an integer: take it as 60.
    # Within 2**53 only, where a float holds every integer exactly; strings and booleans still
    # fail the strict check that follows.
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


#: Last in ``Annotated[int, Strict(), Field(ge=..., le=...), Integral]``: an integer as JSON
#: Schema means it, ``60`` or ``60.0``, never ``"60"``, ``true`` or ``60.5``. It has to follow
#: the bounds, or pydantic no longer writes them into the JSON Schema as minimum and maximum.
Integral = BeforeValidator(_integral)


def _scope(value: str) -> str:
    if not scopes.is_valid_scope(value):
        raise ValueError("scopes are lower-case segments separated by ':' ('*' for any)")
    return value


Scope = Annotated[
    str,
    StringConstraints(min_length=1, max_length=scopes.MAX_SCOPE_LENGTH),
    AfterValidator(_scope),
    documented(pattern=SCOPE_PATTERN),
]
Scopes = Annotated[list[Scope], Field(max_length=validation.MAX_SCOPES)]
#: The same, read into a tuple: a field defaulting to ``()`` is not copied on every
#: validation, as a ``[]`` default is (the verify body, validated on every request); the
#: documented schema is the same array.
ScopeTuple = Annotated[tuple[Scope, ...], Field(max_length=validation.MAX_SCOPES)]


class Input(BaseModel):
    # Unknown fields are refused so that typos do not pass silently.
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        # FastAPI validates bodies with from_attributes, which reads fields off any object: a
        # bare JSON number parsed as the exact-money JsonNumber (a float subclass) would pass
        # as a model whose fields all default. An input is a JSON object, or already a model.
        if isinstance(data, dict | BaseModel):
            return data
        raise ValueError("must be a JSON object")
