"""The circuit breaker: its transition table, exhaustively, and properties over random runs,
under both of its policies: failures in a row (the rate limits' Redis) and a failure
ratio over a window (a webhook subscription)."""

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
    Signal,
    apply,
    ask,
    began,
    closed,
    ended,
    plan,
    report,
    start,
)

IN_A_ROW = BreakerPolicy.in_a_row(3, 5.0)
RATIO = BreakerPolicy(
    window=60, min_attempts=10, failure_ratio=0.5, cool_down=15, max_cool_down=120
)
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
S = BreakerState


def _allows(breaker: Breaker, now: float, policy: BreakerPolicy) -> tuple[bool, Breaker]:
    """`ask`, answer first."""
    after, allowed = ask(breaker, now, policy)
    return allowed, after


# --- failures in a row (a service the process depends on) ----------------------------------
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_the_table_is_the_whole_machine() -> None:
    """Every (state, event) pair is either in the table or refused by `apply`."""
    for state, event in itertools.product(BreakerState, BreakerEvent):
        breaker = Breaker(state=state)
        if (state, event) in TRANSITIONS:
            assert apply(breaker, event, 1.0, IN_A_ROW).state == TRANSITIONS[(state, event)]
        else:
            with pytest.raises(ValueError, match="cannot take"):
                apply(breaker, event, 1.0, IN_A_ROW)


@pytest.mark.parametrize(
    ("breaker", "signal", "now", "event"),
    [
        (Breaker(), Signal.ASK, 100.0, None),
        (Breaker(), Signal.SUCCESS, 0.0, None),
        (Breaker(attempts=2, failures=2), Signal.SUCCESS, 0.0, BreakerEvent.SUCCEEDED),
        (Breaker(), Signal.FAILURE, 0.0, BreakerEvent.FAILED),
        (Breaker(attempts=1, failures=1), Signal.FAILURE, 0.0, BreakerEvent.FAILED),
        (Breaker(attempts=2, failures=2), Signal.FAILURE, 0.0, BreakerEvent.TRIPPED),
        (Breaker(state=OPEN, since=10.0), Signal.ASK, 14.9, None),
        (Breaker(state=OPEN, since=10.0), Signal.ASK, 15.0, BreakerEvent.COOLED),
        (Breaker(state=OPEN, since=10.0), Signal.SUCCESS, 11.0, None),
        (Breaker(state=OPEN, since=10.0), Signal.FAILURE, 11.0, None),
        (Breaker(state=HALF_OPEN, since=10.0), Signal.ASK, 12.0, None),
        (Breaker(state=HALF_OPEN, since=10.0), Signal.ASK, 15.0, BreakerEvent.COOLED),
        (Breaker(state=HALF_OPEN, since=10.0), Signal.SUCCESS, 11.0, BreakerEvent.SUCCEEDED),
        (Breaker(state=HALF_OPEN, since=10.0), Signal.FAILURE, 11.0, BreakerEvent.TRIPPED),
    ],
)
def test_plan(breaker: Breaker, signal: Signal, now: float, event: BreakerEvent | None) -> None:
    assert plan(breaker, signal, now, IN_A_ROW) == event


def test_an_outage_from_its_start_to_its_end() -> None:
    breaker = Breaker()
    for now in (1.0, 2.0):
        breaker = report(breaker, ok=False, now=now, policy=IN_A_ROW)
        assert breaker.state == CLOSED
    tripped = report(breaker, ok=False, now=3.0, policy=IN_A_ROW)
    assert began(breaker, tripped)
    assert (tripped.state, tripped.since) == (OPEN, 3.0)
    assert ask(tripped, 7.9, IN_A_ROW) == (tripped, False)  # cooling down: fall back
    probing, call = ask(tripped, 8.0, IN_A_ROW)
    assert call  # the probe
    assert (probing.state, probing.since) == (HALF_OPEN, 8.0)
    assert ask(probing, 9.0, IN_A_ROW) == (probing, False)  # one probe at a time
    failed = report(probing, ok=False, now=9.0, policy=IN_A_ROW)
    assert (failed.state, failed.since) == (OPEN, 9.0)
    assert not began(probing, failed)  # the same outage
    probing, call = ask(failed, 14.0, IN_A_ROW)
    assert call
    recovered = report(probing, ok=True, now=14.5, policy=IN_A_ROW)
    assert recovered == Breaker(state=CLOSED, failures=0, since=14.5)
    assert ended(probing, recovered)


def test_a_lost_probe_is_replaced_after_the_cooldown() -> None:
    probing = Breaker(state=HALF_OPEN, since=10.0)
    again, call = ask(probing, 15.0, IN_A_ROW)
    assert call
    assert (again.state, again.since) == (HALF_OPEN, 15.0)


def test_a_success_forgets_failures() -> None:
    breaker = report(Breaker(), ok=False, now=1.0, policy=IN_A_ROW)
    assert breaker.failures == 1
    assert report(breaker, ok=True, now=2.0, policy=IN_A_ROW).failures == 0


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, 0.0), (1, float("nan"))])
def test_a_policy_is_checked(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="breaker"):
        BreakerPolicy.in_a_row(threshold, cooldown)


@given(st.lists(st.tuples(st.sampled_from(["ask", "ok", "fail"]), st.floats(0, 3)), max_size=60))
def test_properties_over_random_runs(steps: list[tuple[str, float]]) -> None:
    """Never a transition outside the table; open only after `threshold` failures in a row
    or a failed probe; a closed breaker always lets a caller through."""
    breaker, now, in_a_row = Breaker(), 0.0, 0
    for what, later in steps:
        now += later
        before = breaker
        if what == "ask":
            breaker, call = ask(breaker, now, IN_A_ROW)
            if before.state == CLOSED:
                assert call
                assert breaker == before
        else:
            breaker = report(breaker, ok=what == "ok", now=now, policy=IN_A_ROW)
            if before.state == CLOSED:
                in_a_row = 0 if what == "ok" else in_a_row + 1
        if before.state != breaker.state:
            assert (before.state, breaker.state) in {
                (s, TRANSITIONS[(s, e)]) for s, e in TRANSITIONS
            }
        if began(before, breaker):
            assert in_a_row >= IN_A_ROW.min_attempts
            in_a_row = 0
        assert breaker.failures < IN_A_ROW.min_attempts


# --- a failure ratio over a window (a webhook subscription) -------------------------------


def test_the_table() -> None:
    assert dict(TRANSITIONS) == {
        (S.CLOSED, BreakerEvent.SUCCEEDED): S.CLOSED,
        (S.CLOSED, BreakerEvent.FAILED): S.CLOSED,
        (S.CLOSED, BreakerEvent.TRIPPED): S.OPEN,
        (S.OPEN, BreakerEvent.COOLED): S.HALF_OPEN,
        (S.HALF_OPEN, BreakerEvent.SUCCEEDED): S.CLOSED,
        (S.HALF_OPEN, BreakerEvent.TRIPPED): S.OPEN,
        (S.HALF_OPEN, BreakerEvent.COOLED): S.HALF_OPEN,
    }


def _outcomes(breaker: Breaker, results: list[bool], now: float) -> Breaker:
    for ok in results:
        breaker = report(breaker, ok, now, RATIO)
    return breaker


def test_it_does_not_trip_below_the_minimum_count() -> None:
    breaker = _outcomes(start(0), [False] * 9, 1)
    assert breaker.state == S.CLOSED
    assert _allows(breaker, 1, RATIO)[0]


def test_it_trips_at_the_ratio_once_the_minimum_is_reached() -> None:
    breaker = _outcomes(start(0), [True] * 5 + [False] * 5, 1)
    assert breaker.state == S.OPEN
    assert breaker.until == 1 + RATIO.cool_down
    assert not _allows(breaker, 10, RATIO)[0]


def test_mostly_healthy_stays_closed() -> None:
    breaker = _outcomes(start(0), [True, True, False] * 20, 1)
    assert breaker.state == S.CLOSED


def test_a_new_window_forgets_old_failures() -> None:
    breaker = _outcomes(start(0), [False] * 9, 1)
    breaker = report(breaker, False, 61, RATIO)  # a new window: one failure in it
    assert breaker.state == S.CLOSED
    assert (breaker.attempts, breaker.failures) == (1, 1)


def test_half_open_lets_exactly_one_probe_through() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    ok, probing = _allows(opened, 16, RATIO)
    assert ok
    assert probing.state == S.HALF_OPEN
    assert not _allows(probing, 16.5, RATIO)[0]  # the probe is out
    assert not _allows(probing, 30, RATIO)[0]


def test_a_good_probe_closes_and_a_bad_one_reopens_longer() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    _, probing = _allows(opened, 16, RATIO)
    recovered = report(probing, True, 17, RATIO)
    assert recovered.state == S.CLOSED
    assert closed(recovered)
    relapsed = report(probing, False, 17, RATIO)
    assert relapsed.state == S.OPEN
    assert relapsed.until == 17 + 30  # twice the cool-down
    _, again = _allows(relapsed, 47, RATIO)
    worse = report(again, False, 48, RATIO)
    assert worse.until == 48 + 60
    for _ in range(5):
        _, again = _allows(worse, worse.until, RATIO)
        worse = report(again, False, worse.until, RATIO)
    assert worse.cool_down == RATIO.max_cool_down


def test_a_lost_probe_is_given_up_after_the_cool_down() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    _, probing = _allows(opened, 16, RATIO)
    assert not _allows(probing, 16 + 14, RATIO)[0]
    assert _allows(probing, 16 + 15, RATIO)[0]


def test_outcomes_of_attempts_started_before_it_opened_are_moot() -> None:
    opened = _outcomes(start(0), [False] * 10, 1)
    assert report(opened, True, 2, RATIO) == opened
    assert report(opened, False, 2, RATIO) == opened


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
        allowed, after = _allows(breaker, now, RATIO)
        if breaker.state == S.OPEN and now < breaker.until:
            assert not allowed
        if after.state == S.HALF_OPEN and allowed:
            assert not _allows(after, now, RATIO)[0]
        breaker = after
        if allowed:
            breaker = report(breaker, ok, now, RATIO)
        assert breaker.state in S
        assert breaker.attempts < RATIO.min_attempts or breaker.state == S.CLOSED
