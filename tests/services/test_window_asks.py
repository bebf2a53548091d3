"""``WindowAsks``: the cached window asks of a key's windows are exactly the ones built
afresh for the request's token counts, whatever the windows and counts in whatever order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.admission import TokenCount, WindowAsk, WindowKind
from keyplane.services.directory import compile_policy
from keyplane.services.verify import WindowAsks

# Two shapes of windows, as the directory compiles them (shared by every key of a policy).
_, LOADED = compile_policy(
    None,
    {
        "rate_limits": [{"name": "per_minute", "limit": 60, "period": 60}],
        "token_limits": {"input_per_minute": 1000, "output_per_minute": 500, "total_per_day": 9},
    },
)
_, RATES = compile_policy(None, {"rate_limits": [{"name": "per_second", "limit": 5, "period": 1}]})


def fresh(windows: tuple, tokens_in: int, tokens_out: int) -> tuple[WindowAsk, ...]:
    costs = {
        None: 1,
        TokenCount.INPUT: tokens_in,
        TokenCount.OUTPUT: tokens_out,
        TokenCount.TOTAL: tokens_in + tokens_out,
    }
    return tuple(
        WindowAsk(spec.name, spec.kind, spec.window, costs[spec.counts], spec.counts)
        for spec in windows
    )


@given(
    st.lists(
        st.tuples(st.sampled_from(["loaded", "rates"]), st.integers(0, 3), st.integers(0, 3)),
        max_size=40,
    )
)
def test_cached_asks_equal_fresh_ones(calls: list[tuple[str, int, int]]) -> None:
    cache = WindowAsks(max_entries=3)  # small: emptied and refilled along the way
    for shape, tokens_in, tokens_out in calls:
        windows = LOADED if shape == "loaded" else RATES
        assert cache.asks(windows, tokens_in, tokens_out) == fresh(windows, tokens_in, tokens_out)


def test_asks_are_reused_for_the_same_windows_and_counts_only() -> None:
    cache = WindowAsks()
    first = cache.asks(LOADED, 10, 20)
    assert cache.asks(LOADED, 10, 20) is first
    assert [ask.cost for ask in first] == [1, 10, 20, 30]
    assert [ask.kind for ask in first] == [WindowKind.RATE, *[WindowKind.TOKENS] * 3]
    assert cache.asks(LOADED, 10, 21) is not first
    # Equal windows compiled apart are another entry (found by identity), with equal asks.
    _, again = compile_policy(
        None, {"rate_limits": [{"name": "per_second", "limit": 5, "period": 1}]}
    )
    assert again is not RATES and cache.asks(again, 0, 0) == cache.asks(RATES, 0, 0)
    assert cache.asks((), 5, 5) == ()
