"""The delivery state machine, answer classification, the retry schedule and Retry-After."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.delivery import (
    DEFAULT_RETRY_SCHEDULE,
    GONE_REASON,
    TRANSITIONS,
    DeliveryEvent,
    DeliveryStatus,
    RetryPolicy,
    Verdict,
    advance,
    classify,
    parse_retry_after,
    plan,
    retry_delay,
    should_disable,
)
from core.domain.errors import Conflict

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy()
S, E = DeliveryStatus, DeliveryEvent


# --- the transition table -----------------------------------------------------------------


def test_the_table_is_the_documented_machine() -> None:
    assert dict(TRANSITIONS) == {
        (S.PENDING, E.CLAIM): S.DELIVERING,
        (S.DELIVERING, E.SUCCEED): S.SUCCEEDED,
        (S.DELIVERING, E.RETRY): S.PENDING,
        (S.DELIVERING, E.GIVE_UP): S.DEAD,
        (S.DELIVERING, E.HOLD): S.PENDING,
        (S.DELIVERING, E.RELEASE): S.PENDING,
        (S.DELIVERING, E.EXPIRE): S.PENDING,
        (S.DEAD, E.REDRIVE): S.PENDING,
        (S.DEAD, E.REPLAY): S.PENDING,
        (S.SUCCEEDED, E.REPLAY): S.PENDING,
    }


@pytest.mark.parametrize(("status", "event"), list(itertools.product(S, E)))
def test_every_pair_outside_the_table_is_refused(
    status: DeliveryStatus, event: DeliveryEvent
) -> None:
    if (status, event) in TRANSITIONS:
        assert advance(status, event) == TRANSITIONS[(status, event)]
    else:
        with pytest.raises(Conflict):
            advance(status, event)


def test_every_status_is_reachable_from_pending_and_nothing_is_a_trap() -> None:
    reachable = {S.PENDING}
    while True:
        more = {after for (before, _), after in TRANSITIONS.items() if before in reachable}
        if more <= reachable:
            break
        reachable |= more
    assert reachable == set(S)
    # a finished delivery can always be sent again; nothing stays delivering
    for status in S:
        assert any(before == status for before, _ in TRANSITIONS), status


# --- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (200, Verdict.SUCCESS),
        (201, Verdict.SUCCESS),
        (204, Verdict.SUCCESS),
        (299, Verdict.SUCCESS),
        (410, Verdict.GONE),
        (429, Verdict.THROTTLED),
        (503, Verdict.THROTTLED),
        (100, Verdict.FAILED),
        (199, Verdict.FAILED),
        (300, Verdict.FAILED),
        (301, Verdict.FAILED),
        (302, Verdict.FAILED),
        (307, Verdict.FAILED),
        (400, Verdict.FAILED),
        (404, Verdict.FAILED),
        (409, Verdict.FAILED),
        (500, Verdict.FAILED),
        (502, Verdict.FAILED),
        (504, Verdict.FAILED),
        (None, Verdict.FAILED),
    ],
)
def test_classify(code: int | None, verdict: Verdict) -> None:
    assert classify(code) == verdict


@given(st.integers(100, 599))
def test_only_2xx_succeeds(code: int) -> None:
    assert (classify(code) == Verdict.SUCCESS) == (200 <= code < 300)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("Sun, 01 Mar 2026 12:02:00 GMT", 120.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past: at once
        ("Sun, 31 Feb 2026 11:00:00 GMT", None),  # no such day
        ("Sunday, 01-Mar-26 12:02:00 GMT", None),  # obsolete forms: the schedule stands
        ("Sun, 01 Mar 2026 12:02:00 +0000", None),
        ("99999999999999999999", 999999999999.0),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


# --- the schedule ----------------------------------------------------------------------------


def test_the_default_schedule_is_about_the_documented_one() -> None:
    assert DEFAULT_RETRY_SCHEDULE == (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0,
                                      43200.0, 86400.0)  # fmt: skip
    assert POLICY.attempts == 11
    assert POLICY.longest == 86400


@pytest.mark.parametrize(
    "bad",
    [
        {"schedule": ()},
        {"schedule": (5.0, 0.0)},
        {"schedule": (5.0, -1.0)},
        {"schedule": (float("inf"),)},
        {"schedule": (float("nan"),)},
        {"schedule": (1.0,) * 51},
        {"jitter": -0.1},
        {"jitter": 1.0},
        {"disable_after": timedelta(0)},
    ],
)
def test_a_policy_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the setting
        RetryPolicy(**bad)  # type: ignore[arg-type]


@given(
    st.lists(st.floats(0.001, 1e6), min_size=1, max_size=20),
    st.floats(0, 0.99),
    st.integers(1, 25),
    st.floats(0, 1, exclude_max=True),
)
def test_the_jitter_is_bounded_and_the_schedule_ends(
    schedule: list[float], jitter: float, attempts: int, random: float
) -> None:
    policy = RetryPolicy(schedule=tuple(schedule), jitter=jitter)
    delay = retry_delay(policy, attempts, random)
    if attempts > len(schedule):
        assert delay is None
        return
    assert delay is not None
    base = schedule[attempts - 1]
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
    assert delay > 0


def test_retry_delay_refuses_a_retry_before_any_attempt_and_bad_randomness() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        retry_delay(POLICY, 0, 0.5)
    with pytest.raises(ValueError):  # noqa: PT011
        retry_delay(POLICY, 1, 1.0)


def test_the_middle_of_the_jitter_is_the_schedule() -> None:
    for n, base in enumerate(DEFAULT_RETRY_SCHEDULE, start=1):
        assert retry_delay(POLICY, n, 0.5) == pytest.approx(base)


# --- plan ---------------------------------------------------------------------------------------


def test_a_success_finishes_and_clears_the_failing_streak() -> None:
    done = plan(
        verdict=Verdict.SUCCESS,
        round_attempts=3,
        retry_after=None,
        failing_since=NOW - timedelta(hours=200),  # even when long failing
        now=NOW,
        policy=POLICY,
        random=0.5,
    )
    assert (done.event, done.status, done.next_attempt_at, done.failing) == (
        E.SUCCEED,
        S.SUCCEEDED,
        None,
        False,
    )
    assert done.disable is None


def test_a_failure_is_retried_on_the_schedule() -> None:
    for n, base in enumerate(DEFAULT_RETRY_SCHEDULE, start=1):
        retry = plan(
            verdict=Verdict.FAILED,
            round_attempts=n,
            retry_after=None,
            failing_since=None,
            now=NOW,
            policy=POLICY,
            random=0.5,
        )
        assert retry.event == E.RETRY
        assert retry.status == S.PENDING
        assert retry.next_attempt_at == NOW + timedelta(seconds=base)
        assert retry.failing


def test_after_the_last_delay_the_delivery_is_dead() -> None:
    dead = plan(
        verdict=Verdict.FAILED,
        round_attempts=POLICY.attempts,
        retry_after=None,
        failing_since=None,
        now=NOW,
        policy=POLICY,
        random=0.5,
    )
    assert (dead.event, dead.status, dead.next_attempt_at) == (E.GIVE_UP, S.DEAD, None)


def test_410_disables_and_the_delivery_waits_due_at_once() -> None:
    gone = plan(
        verdict=Verdict.GONE,
        round_attempts=1,
        retry_after=None,
        failing_since=None,
        now=NOW,
        policy=POLICY,
        random=0.5,
    )
    assert (gone.event, gone.status, gone.next_attempt_at) == (E.HOLD, S.PENDING, NOW)
    assert gone.disable == GONE_REASON


def test_410_disables_even_on_the_last_attempt() -> None:
    gone = plan(
        verdict=Verdict.GONE,
        round_attempts=POLICY.attempts,
        retry_after=None,
        failing_since=None,
        now=NOW,
        policy=POLICY,
        random=0.5,
    )
    assert gone.status == S.PENDING
    assert gone.disable == GONE_REASON


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (None, 5.0),  # nothing asked: the schedule
        ("2", 5.0),  # asks for less than the schedule: the schedule (only ever later)
        ("60", 60.0),  # asks for more: honoured
        ("Sun, 01 Mar 2026 12:10:00 GMT", 600.0),
        ("999999", 86400.0),  # clamped to the longest delay
        ("garbage", 5.0),
    ],
)
def test_retry_after_on_429_and_503_only_delays_more_and_is_clamped(
    retry_after: str | None, expected: float
) -> None:
    for code in (429, 503):
        retry = plan(
            verdict=classify(code),
            round_attempts=1,
            retry_after=retry_after,
            failing_since=None,
            now=NOW,
            policy=POLICY,
            random=0.5,
        )
        assert retry.next_attempt_at == NOW + timedelta(seconds=expected)


def test_retry_after_is_ignored_on_other_failures() -> None:
    retry = plan(
        verdict=Verdict.FAILED,
        round_attempts=1,
        retry_after="3600",
        failing_since=None,
        now=NOW,
        policy=POLICY,
        random=0.5,
    )
    assert retry.next_attempt_at == NOW + timedelta(seconds=5)


@given(
    st.sampled_from([Verdict.FAILED, Verdict.THROTTLED]),
    st.integers(1, 11),
    st.one_of(st.none(), st.integers(0, 10**7).map(str)),
    st.floats(0, 1, exclude_max=True),
)
def test_a_retry_is_never_sooner_than_the_jittered_schedule(
    verdict: Verdict, attempts: int, retry_after: str | None, random: float
) -> None:
    decided = plan(
        verdict=verdict,
        round_attempts=attempts,
        retry_after=retry_after,
        failing_since=None,
        now=NOW,
        policy=POLICY,
        random=random,
    )
    scheduled = retry_delay(POLICY, attempts, random)
    if scheduled is None:
        assert decided.status == S.DEAD
        return
    assert decided.next_attempt_at is not None
    waited = (decided.next_attempt_at - NOW).total_seconds()
    assert waited >= scheduled - 1e-6
    assert waited <= max(scheduled, POLICY.longest) + 1e-6


def test_the_auto_disable_rule() -> None:
    limit = POLICY.disable_after
    assert not should_disable(None, NOW, POLICY)
    assert not should_disable(NOW - limit + timedelta(seconds=1), NOW, POLICY)
    assert should_disable(NOW - limit, NOW, POLICY)
    assert should_disable(NOW - limit * 2, NOW, POLICY)


def test_a_failure_after_failing_for_too_long_disables_and_holds() -> None:
    held = plan(
        verdict=Verdict.FAILED,
        round_attempts=2,
        retry_after=None,
        failing_since=NOW - timedelta(hours=121),
        now=NOW,
        policy=POLICY,
        random=0.5,
    )
    assert (held.event, held.status, held.next_attempt_at) == (E.HOLD, S.PENDING, NOW)
    assert held.disable is not None
    assert "121 hours" in held.disable


def test_a_failure_just_short_of_the_limit_is_retried() -> None:
    retried = plan(
        verdict=Verdict.THROTTLED,
        round_attempts=2,
        retry_after=None,
        failing_since=NOW - timedelta(hours=119),
        now=NOW,
        policy=POLICY,
        random=0.5,
    )
    assert retried.event == E.RETRY
    assert retried.disable is None
