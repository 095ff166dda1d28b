"""Token buckets: bursts, steady rates, waits, forgetting callers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.ratelimit import Bucket, Limiter, Rate, gcra


def test_a_full_bucket_allows_its_burst_then_refuses_with_the_wait() -> None:
    rate = Rate(per_second=2.0, burst=3)
    bucket = Bucket(rate, now=100.0)
    assert [bucket.take(rate, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(rate, 100.0) == pytest.approx(0.5)  # one token per half second
    assert bucket.take(rate, 100.25) == pytest.approx(0.25)  # refusals take nothing
    assert bucket.take(rate, 100.5) == 0.0
    assert bucket.take(rate, 100.5) == pytest.approx(0.5)


def test_an_idle_bucket_refills_to_its_burst_and_no_further() -> None:
    rate = Rate(per_second=10.0, burst=2)
    bucket = Bucket(rate, now=0.0)
    bucket.take(rate, 0.0)
    bucket.take(rate, 0.0)
    assert bucket.take(rate, 3600.0) == 0.0
    assert bucket.take(rate, 3600.0) == 0.0
    assert bucket.take(rate, 3600.0) > 0.0


def test_a_clock_that_goes_back_gives_nothing_back() -> None:
    rate = Rate(per_second=1.0, burst=1)
    bucket = Bucket(rate, now=10.0)
    assert bucket.take(rate, 10.0) == 0.0
    assert bucket.take(rate, 5.0) == pytest.approx(1.0)
    assert bucket.take(rate, 10.5) == pytest.approx(0.5)


@given(
    per_second=st.floats(min_value=0.01, max_value=10_000),
    burst=st.integers(min_value=1, max_value=1000),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    per_second: float, burst: int, gaps: list[float]
) -> None:
    rate = Rate(per_second=per_second, burst=burst)
    bucket = Bucket(rate, now=0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        wait = bucket.take(rate, now)
        assert wait >= 0.0
        if wait == 0.0:
            allowed += 1
        else:  # after the wait it says, a token is there
            assert bucket.tokens + wait * per_second == pytest.approx(1.0)
    assert allowed <= burst + now * per_second + 1e-6


def test_the_limiter_keeps_callers_apart() -> None:
    limiter = Limiter(Rate(per_second=1.0, burst=1), capacity=10)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0.0
    assert limiter.take("b", 0.0) == 0.0


def test_the_limiter_forgets_the_least_recently_seen_caller_first() -> None:
    limiter = Limiter(Rate(per_second=1.0, burst=1), capacity=2)
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    assert limiter.take("a", 0.0) > 0.0  # "a" seen again: "b" is now the oldest
    limiter.take("c", 0.0)  # over capacity: "b" is forgotten
    assert len(limiter) == 2
    assert limiter.take("a", 0.0) > 0.0  # still remembered, still empty
    assert limiter.take("b", 0.0) == 0.0  # forgotten: back with a full bucket


@pytest.mark.parametrize(
    ("per_second", "burst"), [(0.0, 1), (-1.0, 1), (float("nan"), 1), (float("inf"), 1), (1.0, 0)]
)
def test_a_rate_that_means_nothing_is_refused(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        Rate(per_second=per_second, burst=burst)


def test_a_limiter_that_remembers_nobody_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Limiter(Rate(per_second=1.0, burst=1), capacity=0)


@given(
    st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0]),
    st.integers(1, 20),
    st.lists(st.integers(0, 2048).map(lambda n: n / 1024), min_size=1, max_size=80),
)
def test_gcra_decides_as_the_bucket_does(per_second: float, burst: int, gaps: list[float]) -> None:
    """The rule Redis runs (`gcra`) admits and refuses exactly as the token bucket (times
    and rates exact in binary, so that neither rounds where the other does not)."""
    rate = Rate(per_second=per_second, burst=burst)
    bucket = Bucket(rate, 0.0)
    tat: float | None = None
    now = 0.0
    for gap in gaps:
        now += gap
        expected = bucket.take(rate, now)
        wait, after = gcra(tat, now, rate)
        assert wait == pytest.approx(expected, abs=1e-6)
        if after is not None:
            tat = after
