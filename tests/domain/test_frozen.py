"""fast_init: the same objects as the dataclass's own __init__, and just as frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keyplane.domain.admission
import keyplane.domain.gcra
import keyplane.services.directory
import keyplane.services.verify  # noqa: F401 (registers its classes)
from keyplane.domain.frozen import REFERENCE_INITS, fast_init

VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.tuples(st.integers()))


@pytest.mark.parametrize("cls", sorted(REFERENCE_INITS, key=lambda c: c.__qualname__))
@given(data=st.data())
@settings(max_examples=60)
def test_fast_init_builds_what_the_generated_init_builds(cls: type[Any], data: Any) -> None:
    fields = dataclasses.fields(cls)
    required = [
        f
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    given_count = data.draw(st.integers(len(required), len(fields)))
    positional = data.draw(st.integers(len(required), given_count))
    values = [data.draw(VALUES) for _ in range(given_count)]
    args = values[:positional]
    kwargs = {
        f.name: v for f, v in zip(fields[positional:given_count], values[positional:], strict=True)
    }
    reference = object.__new__(cls)
    REFERENCE_INITS[cls](reference, *args, **kwargs)
    fast = cls(*args, **kwargs)
    for f in fields:
        assert getattr(fast, f.name) == getattr(reference, f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, fields[0].name, None)


def test_each_instance_gets_its_own_default_factory_value() -> None:
    @fast_init
    @dataclass(frozen=True, slots=True)
    class Holder:
        name: str
        extra: dict[str, int] = field(default_factory=dict)

    first, second = Holder("a"), Holder("b")
    assert first.extra == {} and first.extra is not second.extra
    assert Holder("c", {"x": 1}).extra == {"x": 1}


def test_classes_it_would_build_differently_are_refused() -> None:
    with pytest.raises(TypeError):

        @fast_init
        @dataclass(frozen=True, slots=True)
        class WithPostInit:
            name: str

            def __post_init__(self) -> None:
                pass

    with pytest.raises(TypeError):

        @fast_init
        @dataclass(slots=True)
        class NotFrozen:
            name: str
