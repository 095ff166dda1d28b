"""Group commit: which of a tenant's waiting writes go together into its next transaction.

A tenant's writes are serialized by its writer lock (core/ports.py), so while one
transaction holds it the others only wait; each then pays its own BEGIN, lock,
statements and COMMIT. Group commit lets the writes that arrive meanwhile share the
next transaction instead. Each tenant has a *lane*: idle, gathering or busy.

1. A write that arrives at an idle lane gathers: it lets the event loop run once, so
   that requests it has received already reach the lane too, then commits with them.
   No timer, no batching window: a lone request waits one turn of the loop, a few
   microseconds. (A write whose transaction never yields to the loop, SQLite's, could
   never be joined otherwise: nothing else runs while it commits.) While each turn
   brings another write (the tenant is busy: other requests are on their way to the
   lane), it lets the loop run again, up to `gather_turns` turns in all
   (`keep_gathering`): under load, groups of one or two paid a COMMIT each, and the
   COMMIT is most of a small transaction's cost.
2. A write that arrives while the lane gathers or is busy waits, in arrival order.
3. When the gathering ends, or the transaction in flight ends, the waiting writes form
   the next group, oldest first: as many as fit in `max_writes` requests and
   `max_events` events (`take`). The oldest always goes, whatever its size, so nothing
   starves.
4. A group is judged as if its writes were recorded one after another, in that
   order (`decide_record` judges events in order), and each write gets its own answer.
5. When a group of several writes fails, what happens depends on where (`recover`):
   - while it begins (the lock, a connection: the database is busy or away), no write
     is to blame and each alone would have met the same: every write gets the error;
   - in the transaction, before its commit, it rolled back and nothing of it is
     stored: the writes are retried alone, in order, and each gets the answer it would
     have had alone (a write that one member's data breaks fails only that member);
   - at its commit, the outcome is unknown (the commit may have happened): every write
     gets the error and none is retried, since a retry could record twice.

The transitions are data (`TRANSITIONS`, ARCHITECTURE.md rule 3); `step` looks one up.
Pure: the queueing itself (waiting, waking) is the `Combiner` port's adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType

import msgspec

from core.domain.events import MAX_BATCH_EVENTS

__all__ = [
    "RECOVERY",
    "TRANSITIONS",
    "Action",
    "FailedAt",
    "GroupPolicy",
    "LaneEvent",
    "LaneState",
    "Recovery",
    "keep_gathering",
    "recover",
    "step",
    "take",
]

DEFAULT_MAX_WRITES = 64
#: Turns of the loop a gathering write may let run while each brings another write. Four:
#: single events on one CPU, 16 connections, groups of 3.4 -> 4.6 writes on average and
#: 12% more events per second on SQLite than with one turn; eight gained little more.
DEFAULT_GATHER_TURNS = 4


class LaneState(StrEnum):
    IDLE = "idle"  # no transaction of the tenant in flight (from this process)
    GATHERING = "gathering"  # a write arrived at an idle lane: one turn of the loop
    BUSY = "busy"  # a group's transaction is in flight; arrivals wait


class LaneEvent(StrEnum):
    ARRIVE = "arrive"  # a validated write wants to commit
    GATHERED = "gathered"  # the gathering write had its turn of the loop
    FINISH = "finish"  # the transaction in flight ended (committed or not)


class Action(StrEnum):
    GATHER = "gather"  # the arriving write joins the queue and yields once, then runs it
    WAIT = "wait"  # the arriving write joins the queue
    RUN_NEXT = "run_next"  # the next group (`take`) runs now
    REST = "rest"  # nothing waits: the lane goes idle


#: (state, event, whether writes are waiting when it happens) -> (state after, action).
#: A triple missing here cannot happen (an idle lane has no queue; a gathering one holds
#: at least the gathering write).
TRANSITIONS: Mapping[tuple[LaneState, LaneEvent, bool], tuple[LaneState, Action]] = (
    MappingProxyType(
        {
            (LaneState.IDLE, LaneEvent.ARRIVE, False): (LaneState.GATHERING, Action.GATHER),
            (LaneState.GATHERING, LaneEvent.ARRIVE, True): (LaneState.GATHERING, Action.WAIT),
            (LaneState.GATHERING, LaneEvent.GATHERED, True): (LaneState.BUSY, Action.RUN_NEXT),
            # the gathering write was cancelled before it ran, and nothing else waits
            (LaneState.GATHERING, LaneEvent.GATHERED, False): (LaneState.IDLE, Action.REST),
            (LaneState.BUSY, LaneEvent.ARRIVE, False): (LaneState.BUSY, Action.WAIT),
            (LaneState.BUSY, LaneEvent.ARRIVE, True): (LaneState.BUSY, Action.WAIT),
            (LaneState.BUSY, LaneEvent.FINISH, False): (LaneState.IDLE, Action.REST),
            (LaneState.BUSY, LaneEvent.FINISH, True): (LaneState.BUSY, Action.RUN_NEXT),
        }
    )
)


def step(state: LaneState, event: LaneEvent, waiting: bool) -> tuple[LaneState, Action]:
    """The lane's next state and what to do; a pair not in `TRANSITIONS` is a bug."""
    found = TRANSITIONS.get((state, event, waiting))
    if found is None:
        raise ValueError(f"a lane cannot {event} while {state} (writes waiting: {waiting})")
    return found


class GroupPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """At most `max_writes` requests and `max_events` events per group (the oldest waiting
    write always goes, even a batch larger than `max_events`). `max_writes` 1 turns
    combining off: every write commits alone, one after another. A gathering write lets
    the loop run at most `gather_turns` times (`keep_gathering`)."""

    max_writes: int = DEFAULT_MAX_WRITES
    max_events: int = MAX_BATCH_EVENTS
    gather_turns: int = DEFAULT_GATHER_TURNS

    def __post_init__(self) -> None:
        if self.max_writes < 1:
            raise ValueError(f"max_writes must be at least 1, not {self.max_writes}")
        if self.max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {self.max_events}")
        if self.gather_turns < 1:
            raise ValueError(f"gather_turns must be at least 1, not {self.gather_turns}")


def keep_gathering(turns: int, before: int, waiting: int, policy: GroupPolicy) -> bool:
    """Whether a gathering write lets the loop run once more, after `turns` turns, the
    last of which took the writes waiting from `before` to `waiting`: only while the last
    turn brought one, the turns are not all spent and the group is not full yet."""
    return before < waiting < policy.max_writes and turns < policy.gather_turns


def take(sizes: Sequence[int], policy: GroupPolicy) -> int:
    """How many of the waiting writes (their event counts, oldest first) form the next group.

    The oldest always; then each next one while the group stays within the policy. A
    write that does not fit ends the group (arrival order is never skipped over)."""
    if not sizes:
        return 0
    count, events = 1, sizes[0]
    for size in sizes[1:]:
        if count >= policy.max_writes or events + size > policy.max_events:
            break
        count += 1
        events += size
    return count


class FailedAt(StrEnum):
    BEGIN = "begin"  # taking the lock or a connection: nothing began
    BEFORE_COMMIT = "before_commit"  # rolled back: nothing of the group is stored
    COMMIT = "commit"  # the commit itself failed: stored or not, nobody knows


class Recovery(StrEnum):
    OWN_ERROR = "own_error"  # a write alone: the error is its own
    RETRY_ALONE = "retry_alone"  # each write again, alone, in order
    FAIL_ALL = "fail_all"  # every write gets the error, none is retried


#: (a group of several writes?, where it failed) -> what each of its writes gets.
RECOVERY: Mapping[tuple[bool, FailedAt], Recovery] = MappingProxyType(
    {
        (False, FailedAt.BEGIN): Recovery.OWN_ERROR,
        (False, FailedAt.BEFORE_COMMIT): Recovery.OWN_ERROR,
        (False, FailedAt.COMMIT): Recovery.OWN_ERROR,
        (True, FailedAt.BEGIN): Recovery.FAIL_ALL,
        (True, FailedAt.BEFORE_COMMIT): Recovery.RETRY_ALONE,
        (True, FailedAt.COMMIT): Recovery.FAIL_ALL,
    }
)


def recover(writes: int, failed_at: FailedAt) -> Recovery:
    """What the writes of a failed group get (rule 5 of the module's docstring)."""
    return RECOVERY[(writes > 1, failed_at)]
