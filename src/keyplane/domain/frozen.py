"""A cheaper ``__init__`` for the frozen, slotted dataclasses made on every verify.

A frozen dataclass's generated ``__init__`` stores each field through
``object.__setattr__(self, "name", value)``, which bypasses the class's own (refusing)
``__setattr__`` but looks the attribute up by name every time: 1.3 µs for six fields, several
times what a plain class takes. The slots' own descriptors store a value without that lookup
and without going through ``__setattr__`` either, so the instance stays exactly as frozen (the
class's ``__setattr__`` still refuses every later assignment) for about half the cost.

Only classes the generated code would build the same way qualify: every field in ``__init__``,
positional or keyword, no ``__post_init__`` and no ``InitVar``. Anything else is refused when
the class is defined, never silently built differently.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

#: Each decorated class's generated ``__init__``, the reference the tests compare with.
REFERENCE_INITS: dict[type[Any], Any] = {}


class _Unset:
    """Marks an argument not given, for fields with a ``default_factory``."""


_UNSET = _Unset()


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass ``cls`` an ``__init__`` that stores through its slot
    descriptors; same parameters, defaults and default factories as the generated one."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init is for frozen dataclasses with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: fast_init does not call __post_init__")
    namespace: dict[str, Any] = {"_UNSET": _UNSET}
    parameters: list[str] = []
    lines: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.name
        if not field.init or field.kw_only:
            raise TypeError(f"{cls.__name__}.{name}: fast_init needs plain init fields")
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = field.default
            parameters.append(f"{name}=_default_{name}")
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            parameters.append(f"{name}=_UNSET")
            lines.append(f"if {name} is _UNSET: {name} = _factory_{name}()")
        else:
            parameters.append(name)
        lines.append(f"_set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(parameters)}):\n"
    source += "".join(f"    {line}\n" for line in lines or ["pass"])
    exec(source, namespace)  # noqa: S102 (built from field names only, at import)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    REFERENCE_INITS[cls] = cls.__init__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
