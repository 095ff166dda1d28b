"""Group commit's rules (core/domain/groupcommit.py): the lane's transitions, which waiting
writes form a group, and what the writes of a failed group get."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.groupcommit import (
    RECOVERY,
    TRANSITIONS,
    Action,
    FailedAt,
    GroupPolicy,
    LaneEvent,
    LaneState,
    Recovery,
    keep_gathering,
    recover,
    step,
    take,
)


def test_a_write_at_an_idle_lane_gathers_then_its_group_runs() -> None:
    assert step(LaneState.IDLE, LaneEvent.ARRIVE, False) == (LaneState.GATHERING, Action.GATHER)
    assert step(LaneState.GATHERING, LaneEvent.ARRIVE, True) == (LaneState.GATHERING, Action.WAIT)
    assert step(LaneState.GATHERING, LaneEvent.GATHERED, True) == (
        LaneState.BUSY,
        Action.RUN_NEXT,
    )


def test_writes_arriving_while_busy_wait_and_run_next_or_the_lane_rests() -> None:
    for waiting in (False, True):
        assert step(LaneState.BUSY, LaneEvent.ARRIVE, waiting) == (LaneState.BUSY, Action.WAIT)
    assert step(LaneState.BUSY, LaneEvent.FINISH, True) == (LaneState.BUSY, Action.RUN_NEXT)
    assert step(LaneState.BUSY, LaneEvent.FINISH, False) == (LaneState.IDLE, Action.REST)
    # the gathering write went away before it ran, and nobody else waits
    assert step(LaneState.GATHERING, LaneEvent.GATHERED, False) == (LaneState.IDLE, Action.REST)


def test_every_other_triple_is_refused() -> None:
    for triple in itertools.product(LaneState, LaneEvent, (False, True)):
        if triple in TRANSITIONS:
            continue
        with pytest.raises(ValueError, match="a lane cannot"):
            step(*triple)
    # exactly these cannot happen: an idle lane has no queue and nothing in flight
    assert set(itertools.product(LaneState, LaneEvent, (False, True))) - set(TRANSITIONS) == {
        (LaneState.IDLE, LaneEvent.ARRIVE, True),
        (LaneState.IDLE, LaneEvent.GATHERED, False),
        (LaneState.IDLE, LaneEvent.GATHERED, True),
        (LaneState.IDLE, LaneEvent.FINISH, False),
        (LaneState.IDLE, LaneEvent.FINISH, True),
        (LaneState.GATHERING, LaneEvent.ARRIVE, False),
        (LaneState.GATHERING, LaneEvent.FINISH, False),
        (LaneState.GATHERING, LaneEvent.FINISH, True),
        (LaneState.BUSY, LaneEvent.GATHERED, False),
        (LaneState.BUSY, LaneEvent.GATHERED, True),
    }


def test_a_lane_that_is_not_idle_always_has_a_way_back_to_idle() -> None:
    # from each state reachable by ARRIVE, following GATHERED/FINISH with nothing waiting
    # ends idle: no lane is left busy once its writes are done
    for state in (LaneState.GATHERING, LaneState.BUSY):
        event = LaneEvent.GATHERED if state is LaneState.GATHERING else LaneEvent.FINISH
        assert step(state, event, False) == (LaneState.IDLE, Action.REST)


def test_take_starts_with_the_oldest_and_stops_at_the_first_that_does_not_fit() -> None:
    policy = GroupPolicy(max_writes=3, max_events=10)
    assert take([], policy) == 0
    assert take([1], policy) == 1
    assert take([1, 1, 1, 1, 1], policy) == 3  # max_writes
    assert take([4, 5, 1], policy) == 3  # exactly 10 events
    assert take([4, 5, 2], policy) == 2  # 11 would not fit
    assert take([4, 7, 1], policy) == 1  # arrival order is never skipped over
    assert take([50, 1], policy) == 1  # the oldest goes whatever its size
    assert take([1, 1], GroupPolicy(max_writes=1)) == 1  # combining off


@given(
    st.lists(st.integers(min_value=1, max_value=1000), max_size=80),
    st.integers(min_value=1, max_value=70),
    st.integers(min_value=1, max_value=2000),
)
def test_take_is_the_longest_prefix_within_the_policy(
    sizes: list[int], max_writes: int, max_events: int
) -> None:
    policy = GroupPolicy(max_writes=max_writes, max_events=max_events)
    n = take(sizes, policy)
    if not sizes:
        assert n == 0
        return
    assert 1 <= n <= min(len(sizes), max_writes)
    if n > 1:
        assert sum(sizes[:n]) <= max_events
    longer = n + 1
    assert not (longer <= len(sizes) and longer <= max_writes and sum(sizes[:longer]) <= max_events)


def test_policy_bounds() -> None:
    assert GroupPolicy() == GroupPolicy(max_writes=64, max_events=1000, gather_turns=4)
    with pytest.raises(ValueError, match="max_writes"):
        GroupPolicy(max_writes=0)
    with pytest.raises(ValueError, match="max_events"):
        GroupPolicy(max_events=0)
    with pytest.raises(ValueError, match="gather_turns"):
        GroupPolicy(gather_turns=0)


@pytest.mark.parametrize(
    ("turns", "before", "waiting", "more"),
    [
        (1, 1, 1, False),  # a lone write: one turn, nobody came, it commits
        (1, 1, 2, True),  # the turn brought a write: another turn
        (2, 2, 5, True),
        (3, 5, 5, False),  # a turn that brought nobody ends the gathering
        (4, 3, 9, False),  # the turns are spent
        (2, 3, 8, False),  # the group is full (max_writes 8)
    ],
)
def test_a_gathering_write_lets_the_loop_run_again_only_while_writes_keep_coming(
    turns: int, before: int, waiting: int, more: bool
) -> None:
    policy = GroupPolicy(max_writes=8, gather_turns=4)
    assert keep_gathering(turns, before, waiting, policy) is more


def test_one_write_a_group_never_gathers_twice() -> None:
    assert not keep_gathering(1, 1, 2, GroupPolicy(max_writes=1))


def test_what_the_writes_of_a_failed_group_get() -> None:
    for where in FailedAt:
        assert recover(1, where) is Recovery.OWN_ERROR
    # the database is busy or away: each alone would meet the same, no one is to blame
    assert recover(2, FailedAt.BEGIN) is Recovery.FAIL_ALL
    # rolled back: nothing is stored, each write again alone gets its own answer
    assert recover(2, FailedAt.BEFORE_COMMIT) is Recovery.RETRY_ALONE
    # the commit failed: it may have happened, a retry could record twice
    assert recover(64, FailedAt.COMMIT) is Recovery.FAIL_ALL
    assert set(RECOVERY) == set(itertools.product((False, True), FailedAt))
