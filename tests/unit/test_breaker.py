"""The per-subscription circuit breaker: closed, open, half-open with one probe."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.breaker import (
    TRANSITIONS,
    Breaker,
    BreakerEvent,
    BreakerPolicy,
    BreakerState,
    allows,
    closed,
    record,
    start,
)
from core.domain.errors import Conflict

POLICY = BreakerPolicy(
    window=60, min_attempts=10, failure_ratio=0.5, cool_down=15, max_cool_down=120
)
S = BreakerState


def test_the_table() -> None:
    assert dict(TRANSITIONS) == {
        (S.CLOSED, BreakerEvent.TRIP): S.OPEN,
        (S.OPEN, BreakerEvent.COOL): S.HALF_OPEN,
        (S.HALF_OPEN, BreakerEvent.RECOVER): S.CLOSED,
        (S.HALF_OPEN, BreakerEvent.RELAPSE): S.OPEN,
    }


def _outcomes(breaker: Breaker, results: list[bool], now: float) -> Breaker:
    for ok in results:
        breaker = record(breaker, ok, now, POLICY)
    return breaker


def test_it_does_not_trip_below_the_minimum_count() -> None:
    breaker = _outcomes(start(0), [False] * 9, 1)
    assert breaker.state == S.CLOSED
    assert allows(breaker, 1, POLICY)[0]


def test_it_trips_at_the_ratio_once_the_minimum_is_reached() -> None:
    breaker = _outcomes(start(0), [True] * 5 + [False] * 5, 1)
    assert breaker.state == S.OPEN
    assert breaker.until == 1 + POLICY.cool_down
    assert not allows(breaker, 10, POLICY)[0]


def test_mostly_healthy_stays_closed() -> None:
    breaker = _outcomes(start(0), [True, True, False] * 20, 1)
    assert breaker.state == S.CLOSED


def test_a_new_window_forgets_old_failures() -> None:
    breaker = _outcomes(start(0), [False] * 9, 1)
    breaker = record(breaker, False, 61, POLICY)  # a new window: one failure in it
    assert breaker.state == S.CLOSED
    assert (breaker.attempts, breaker.failures) == (1, 1)


def test_half_open_lets_exactly_one_probe_through() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    ok, probing = allows(opened, 16, POLICY)
    assert ok
    assert probing.state == S.HALF_OPEN
    assert not allows(probing, 16.5, POLICY)[0]  # the probe is out
    assert not allows(probing, 30, POLICY)[0]


def test_a_good_probe_closes_and_a_bad_one_reopens_longer() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    _, probing = allows(opened, 16, POLICY)
    recovered = record(probing, True, 17, POLICY)
    assert recovered.state == S.CLOSED
    assert closed(recovered)
    relapsed = record(probing, False, 17, POLICY)
    assert relapsed.state == S.OPEN
    assert relapsed.until == 17 + 30  # twice the cool-down
    _, again = allows(relapsed, 47, POLICY)
    worse = record(again, False, 48, POLICY)
    assert worse.until == 48 + 60
    for _ in range(5):
        _, again = allows(worse, worse.until, POLICY)
        worse = record(again, False, worse.until, POLICY)
    assert worse.cool_down == POLICY.max_cool_down


def test_a_lost_probe_is_given_up_after_the_cool_down() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    _, probing = allows(opened, 16, POLICY)
    assert not allows(probing, 16 + 14, POLICY)[0]
    assert allows(probing, 16 + 15, POLICY)[0]


def test_outcomes_of_attempts_started_before_it_opened_are_moot() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    assert record(opened, True, 2, POLICY) == opened
    assert record(opened, False, 2, POLICY) == opened


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, BreakerEvent)))
def test_no_transition_outside_the_table(state: S, event: BreakerEvent) -> None:
    from core.domain.breaker import _advance

    breaker = Breaker(state=state)
    if (state, event) in TRANSITIONS:
        assert _advance(breaker, event).state == TRANSITIONS[(state, event)]
    else:
        with pytest.raises(Conflict):
            _advance(breaker, event)


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0},
        {"window": float("inf")},
        {"min_attempts": 0},
        {"failure_ratio": 0},
        {"failure_ratio": 1.5},
        {"cool_down": 0},
        {"cool_down": 100, "max_cool_down": 10},
    ],
)
def test_a_policy_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        BreakerPolicy(**bad)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5)), max_size=200))
def test_at_most_one_probe_is_ever_out_and_open_refuses(steps: list[tuple[bool, float]]) -> None:
    """Whatever happens, an open breaker allows nothing before its time, a half-open one
    one attempt per cool-down, and the state is always one of the table's."""
    now = 0.0
    breaker = start(now)
    for ok, pause in steps:
        now += pause
        allowed, after = allows(breaker, now, POLICY)
        if breaker.state == S.OPEN and now < breaker.until:
            assert not allowed
        if after.state == S.HALF_OPEN and allowed:
            assert not allows(after, now, POLICY)[0]
        breaker = after
        if allowed:
            breaker = record(breaker, ok, now, POLICY)
        assert breaker.state in S
        assert breaker.attempts < POLICY.min_attempts or breaker.state == S.CLOSED
