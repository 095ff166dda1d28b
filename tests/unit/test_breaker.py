"""The circuit breaker: its transition table, exhaustively, and properties over random runs."""

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
    ended,
    plan,
    report,
)

POLICY = BreakerPolicy(threshold=3, cooldown=5.0)
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_the_table_is_the_whole_machine() -> None:
    """Every (state, event) pair is either in the table or refused by `apply`."""
    for state, event in itertools.product(BreakerState, BreakerEvent):
        breaker = Breaker(state=state)
        if (state, event) in TRANSITIONS:
            assert apply(breaker, event, 1.0).state == TRANSITIONS[(state, event)]
        else:
            with pytest.raises(ValueError, match="cannot take"):
                apply(breaker, event, 1.0)


@pytest.mark.parametrize(
    ("breaker", "signal", "now", "event"),
    [
        (Breaker(), Signal.ASK, 100.0, None),
        (Breaker(), Signal.SUCCESS, 0.0, None),
        (Breaker(failures=2), Signal.SUCCESS, 0.0, BreakerEvent.SUCCEEDED),
        (Breaker(), Signal.FAILURE, 0.0, BreakerEvent.FAILED),
        (Breaker(failures=1), Signal.FAILURE, 0.0, BreakerEvent.FAILED),
        (Breaker(failures=2), Signal.FAILURE, 0.0, BreakerEvent.TRIPPED),
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
    assert plan(breaker, signal, now, POLICY) == event


def test_an_outage_from_its_start_to_its_end() -> None:
    breaker = Breaker()
    for now in (1.0, 2.0):
        breaker = report(breaker, ok=False, now=now, policy=POLICY)
        assert breaker.state == CLOSED
    tripped = report(breaker, ok=False, now=3.0, policy=POLICY)
    assert began(breaker, tripped)
    assert (tripped.state, tripped.since) == (OPEN, 3.0)
    assert ask(tripped, 7.9, POLICY) == (tripped, False)  # cooling down: fall back
    probing, call = ask(tripped, 8.0, POLICY)
    assert call  # the probe
    assert (probing.state, probing.since) == (HALF_OPEN, 8.0)
    assert ask(probing, 9.0, POLICY) == (probing, False)  # one probe at a time
    failed = report(probing, ok=False, now=9.0, policy=POLICY)
    assert (failed.state, failed.since) == (OPEN, 9.0)
    assert not began(probing, failed)  # the same outage
    probing, call = ask(failed, 14.0, POLICY)
    assert call
    closed = report(probing, ok=True, now=14.5, policy=POLICY)
    assert closed == Breaker(state=CLOSED, failures=0, since=14.5)
    assert ended(probing, closed)


def test_a_lost_probe_is_replaced_after_the_cooldown() -> None:
    probing = Breaker(state=HALF_OPEN, since=10.0)
    again, call = ask(probing, 15.0, POLICY)
    assert call
    assert (again.state, again.since) == (HALF_OPEN, 15.0)


def test_a_success_forgets_failures() -> None:
    breaker = report(Breaker(), ok=False, now=1.0, policy=POLICY)
    assert breaker.failures == 1
    assert report(breaker, ok=True, now=2.0, policy=POLICY).failures == 0


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, 0.0), (1, float("nan"))])
def test_a_policy_is_checked(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="breaker"):
        BreakerPolicy(threshold=threshold, cooldown=cooldown)


@given(st.lists(st.tuples(st.sampled_from(["ask", "ok", "fail"]), st.floats(0, 3)), max_size=60))
def test_properties_over_random_runs(steps: list[tuple[str, float]]) -> None:
    """Never a transition outside the table; open only after `threshold` failures in a row
    or a failed probe; a closed breaker always lets a caller through."""
    breaker, now, in_a_row = Breaker(), 0.0, 0
    for what, later in steps:
        now += later
        before = breaker
        if what == "ask":
            breaker, call = ask(breaker, now, POLICY)
            if before.state == CLOSED:
                assert call
                assert breaker == before
        else:
            breaker = report(breaker, ok=what == "ok", now=now, policy=POLICY)
            if before.state == CLOSED:
                in_a_row = 0 if what == "ok" else in_a_row + 1
        if before.state != breaker.state:
            assert (before.state, breaker.state) in {
                (s, TRANSITIONS[(s, e)]) for s, e in TRANSITIONS
            }
        if began(before, breaker):
            assert in_a_row >= POLICY.threshold
            in_a_row = 0
        assert breaker.failures < POLICY.threshold
