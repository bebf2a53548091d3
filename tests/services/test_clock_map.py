from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyplane.services.clock_map import ClockMap


def test_a_full_map_evicts_the_first_entry_not_read_since_the_hand_passed() -> None:
    evicted: list[tuple[str, int]] = []
    clock = ClockMap[str, int](3, lambda key, value: evicted.append((key, value)))
    for number, key in enumerate("abc"):
        clock.put(key, number)
    assert clock.get("a") == 0  # a second chance for "a"
    clock.put("d", 3)
    assert evicted == [("b", 1)]
    assert sorted(clock.items()) == [("a", 0), ("c", 2), ("d", 3)]
    # The hand moved past "a" and cleared its bit: "c" goes next, then "a".
    clock.put("e", 4)
    clock.put("f", 5)
    assert evicted == [("b", 1), ("c", 2), ("a", 0)]


def test_an_expired_entry_is_evicted_even_when_it_was_read() -> None:
    evicted: list[str] = []
    clock = ClockMap[str, int](2, lambda key, value: evicted.append(key))
    clock.put("old", 1, deadline=10.0)
    clock.put("new", 2, deadline=100.0)
    assert clock.get("old", now=5.0) == 1
    assert clock.get("old", now=10.0) is None  # at its deadline it is gone for readers
    clock.put("next", 3, deadline=100.0, now=20.0)
    assert evicted == ["old"]
    assert clock.get("new", now=20.0) == 2


def test_popped_slots_are_reused_before_anything_is_evicted() -> None:
    evicted: list[str] = []
    clock = ClockMap[str, int](2, lambda key, value: evicted.append(key))
    clock.put("a", 1)
    clock.put("b", 2)
    assert clock.pop("a") == 1
    assert clock.pop("a") is None
    clock.put("c", 3)
    assert evicted == []
    assert sorted(clock.items()) == [("b", 2), ("c", 3)]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 12), st.integers()),
        st.tuples(st.just("get"), st.integers(0, 12), st.just(0)),
        st.tuples(st.just("pop"), st.integers(0, 12), st.just(0)),
    ),
    max_size=200,
)


@given(st.integers(1, 8), operations)
def test_clock_map_behaves_as_a_bounded_map(
    capacity: int, steps: list[tuple[str, int, int]]
) -> None:
    """Against a plain dict: every read answers what the dict holds, unless the key was
    evicted (reported once, with its value, only when the map was full)."""
    evicted: list[tuple[int, int]] = []
    clock = ClockMap[int, int](capacity, lambda key, value: evicted.append((key, value)))
    model: dict[int, int] = {}
    for action, key, value in steps:
        if action == "put":
            before = len(evicted)
            full = len(model) == capacity and key not in model
            clock.put(key, value)
            assert len(evicted) - before == (1 if full else 0)
            if full:
                gone, gone_value = evicted[-1]
                assert model.pop(gone) == gone_value
            model[key] = value
        elif action == "get":
            assert clock.get(key) == model.get(key)
        else:
            assert clock.pop(key) == model.pop(key, None)
        assert len(clock) == len(model) <= capacity
        assert dict(clock.items()) == model
