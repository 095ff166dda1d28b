"""A circuit breaker: stop calling a service that fails, try it again after a while.

States: *closed* (the service is called), *open* (it is not: the caller falls back at
once), *half-open* (one call, the probe, is let through to see whether it works again).

- closed: a success resets the count of failures in a row; the `threshold`-th
  failure in a row trips the breaker open;
- open: after `cooldown`, the next caller is the probe (half-open);
- half-open: the probe's success closes the breaker, its failure opens it again for
  another `cooldown`; callers meanwhile fall back. A probe that never reports (its
  caller was cancelled) is replaced after `cooldown`.

The transitions are data (`TRANSITIONS`, ARCHITECTURE.md rule 3). `plan` decides from
the breaker, what happened (a caller asks, a call succeeded, a call failed) and the
time which event that is, if any; `apply` performs it. `ask` and `report` are the two
together. An outage begins when the breaker opens from closed (`began`) and ends when
it closes again (`ended`): what a caller logs once.

Pure: the time is an argument, in seconds on any clock that never goes back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

import msgspec

__all__ = [
    "TRANSITIONS",
    "Breaker",
    "BreakerEvent",
    "BreakerPolicy",
    "BreakerState",
    "Signal",
    "apply",
    "ask",
    "began",
    "ended",
    "plan",
    "report",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(StrEnum):
    SUCCEEDED = "succeeded"  # a call worked: failures forgotten (closes a half-open breaker)
    FAILED = "failed"  # a call failed, below the threshold
    TRIPPED = "tripped"  # a call failed at the threshold, or the probe failed
    COOLED = "cooled"  # the cooldown is over: this caller is the probe


class Signal(StrEnum):
    """What the breaker is told."""

    ASK = "ask"
    SUCCESS = "success"
    FAILURE = "failure"


TRANSITIONS: Mapping[tuple[BreakerState, BreakerEvent], BreakerState] = MappingProxyType(
    {
        (BreakerState.CLOSED, BreakerEvent.SUCCEEDED): BreakerState.CLOSED,
        (BreakerState.CLOSED, BreakerEvent.FAILED): BreakerState.CLOSED,
        (BreakerState.CLOSED, BreakerEvent.TRIPPED): BreakerState.OPEN,
        (BreakerState.OPEN, BreakerEvent.COOLED): BreakerState.HALF_OPEN,
        (BreakerState.HALF_OPEN, BreakerEvent.SUCCEEDED): BreakerState.CLOSED,
        (BreakerState.HALF_OPEN, BreakerEvent.TRIPPED): BreakerState.OPEN,
        (BreakerState.HALF_OPEN, BreakerEvent.COOLED): BreakerState.HALF_OPEN,
    }
)


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Open after `threshold` failures in a row; probe again after `cooldown` seconds."""

    threshold: int = 3
    cooldown: float = 5.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"a breaker's threshold must be at least 1, not {self.threshold}")
        if not (math.isfinite(self.cooldown) and self.cooldown > 0):
            raise ValueError(f"a breaker's cooldown must be positive, not {self.cooldown}")


class Breaker(msgspec.Struct, frozen=True, kw_only=True):
    state: BreakerState = BreakerState.CLOSED
    #: Failures in a row (closed).
    failures: int = 0
    #: When the state began (open: the cooldown's start; half-open: the probe's).
    since: float = 0.0


def plan(
    breaker: Breaker, signal: Signal, now: float, policy: BreakerPolicy
) -> BreakerEvent | None:
    """The event that `signal` at `now` is for `breaker`; None when nothing changes."""
    state = breaker.state
    match signal:
        case Signal.ASK:
            cooled = now - breaker.since >= policy.cooldown
            return BreakerEvent.COOLED if state != BreakerState.CLOSED and cooled else None
        case Signal.SUCCESS:
            if state == BreakerState.HALF_OPEN or (
                state == BreakerState.CLOSED and breaker.failures
            ):
                return BreakerEvent.SUCCEEDED
            return None  # open: a late answer to a call made before it opened
        case Signal.FAILURE:
            if state == BreakerState.HALF_OPEN:
                return BreakerEvent.TRIPPED
            if state == BreakerState.CLOSED:
                tripped = breaker.failures + 1 >= policy.threshold
                return BreakerEvent.TRIPPED if tripped else BreakerEvent.FAILED
            return None


def apply(breaker: Breaker, event: BreakerEvent, now: float) -> Breaker:
    """The breaker after `event` at `now`; an event its state does not allow is an error."""
    after = TRANSITIONS.get((breaker.state, event))
    if after is None:
        raise ValueError(f"a {breaker.state} breaker cannot take {event}")
    failures = breaker.failures + 1 if event == BreakerEvent.FAILED else 0
    since = breaker.since if after == breaker.state and event != BreakerEvent.COOLED else now
    return Breaker(state=after, failures=failures, since=since)


def _step(breaker: Breaker, signal: Signal, now: float, policy: BreakerPolicy) -> Breaker:
    event = plan(breaker, signal, now, policy)
    return breaker if event is None else apply(breaker, event, now)


def ask(breaker: Breaker, now: float, policy: BreakerPolicy) -> tuple[Breaker, bool]:
    """Whether a caller may call the service now, and the breaker after asking: closed,
    yes; open, no, unless the cooldown is over (then this caller is the probe)."""
    event = plan(breaker, Signal.ASK, now, policy)
    if event is None:
        return breaker, breaker.state == BreakerState.CLOSED
    return apply(breaker, event, now), True


def report(breaker: Breaker, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
    """The breaker after a call's outcome."""
    return _step(breaker, Signal.SUCCESS if ok else Signal.FAILURE, now, policy)


def began(before: Breaker, after: Breaker) -> bool:
    """An outage began: the breaker opened from closed."""
    return before.state == BreakerState.CLOSED and after.state == BreakerState.OPEN


def ended(before: Breaker, after: Breaker) -> bool:
    """An outage ended: the breaker closed again."""
    return before.state != BreakerState.CLOSED and after.state == BreakerState.CLOSED
