"""A circuit breaker per subscription: a target that keeps failing stops being hammered.

The breaker is *closed* while the target answers: attempts go ahead, and their
outcomes are counted in a window of `window` seconds (a new window starts when the
current one is over). When a window holds at least `min_attempts` outcomes of which a
`failure_ratio` or more failed, it *opens*: no attempt starts for `cool_down`
seconds. Then it is *half-open*: exactly one attempt (the probe) may start. Its
success closes the breaker (and clears the counts); its failure opens it again, for
twice the previous cool-down, up to `max_cool_down`.

A probe whose outcome never comes (its deliverer stopped) is given up after
`cool_down`: another probe may start then.

The transitions are data (`TRANSITIONS`); a `Breaker` is a value (every change
makes a new one). Pure: the time is an argument, in seconds on any clock that never
goes back. The deliveries the breaker holds back are not failed or counted: they
wait, due, until it lets attempts through again (their retry schedules resume then).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

import msgspec

from core.domain.errors import Conflict

__all__ = [
    "TRANSITIONS",
    "Breaker",
    "BreakerEvent",
    "BreakerPolicy",
    "BreakerState",
    "allows",
    "closed",
    "record",
    "start",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(StrEnum):
    #: A window's failures reached the ratio: stop attempts.
    TRIP = "trip"
    #: The cool-down is over: let one probe through.
    COOL = "cool"
    #: The probe succeeded.
    RECOVER = "recover"
    #: The probe failed.
    RELAPSE = "relapse"


_S, _E = BreakerState, BreakerEvent

#: (state before, event) -> state after.
TRANSITIONS: Mapping[tuple[BreakerState, BreakerEvent], BreakerState] = MappingProxyType(
    {
        (_S.CLOSED, _E.TRIP): _S.OPEN,
        (_S.OPEN, _E.COOL): _S.HALF_OPEN,
        (_S.HALF_OPEN, _E.RECOVER): _S.CLOSED,
        (_S.HALF_OPEN, _E.RELAPSE): _S.OPEN,
    }
)


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True):
    window: float = 60.0
    min_attempts: int = 10
    failure_ratio: float = 0.5
    cool_down: float = 15.0
    max_cool_down: float = 600.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window) and self.window > 0):
            raise ValueError("a breaker's window must be a positive number of seconds")
        if self.min_attempts < 1:
            raise ValueError("a breaker needs at least one attempt to judge")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("a failure ratio is in (0, 1]")
        if not 0 < self.cool_down <= self.max_cool_down:
            raise ValueError("0 < cool_down <= max_cool_down")


class Breaker(msgspec.Struct, frozen=True, kw_only=True):
    state: BreakerState = BreakerState.CLOSED
    #: closed: when the counting window began, and its counts
    window_start: float = 0.0
    attempts: int = 0
    failures: int = 0
    #: open: until when; half-open: when the probe started (None: no probe out)
    until: float = 0.0
    probe_started: float | None = None
    #: the cool-down the breaker opened with last
    cool_down: float = 0.0


def start(now: float) -> Breaker:
    """A closed breaker with an empty window starting at `now`."""
    return Breaker(window_start=now)


def _advance(breaker: Breaker, event: BreakerEvent, **changes: object) -> Breaker:
    after = TRANSITIONS.get((breaker.state, event))
    if after is None:
        raise Conflict(f"A {breaker.state} breaker cannot {event}.")
    return msgspec.structs.replace(breaker, state=after, **changes)


def allows(breaker: Breaker, now: float, policy: BreakerPolicy) -> tuple[bool, Breaker]:
    """Whether an attempt may start at `now`, and the breaker after it started (a half-open
    breaker's one probe is taken by the attempt that is allowed)."""
    if breaker.state == BreakerState.OPEN:
        if now < breaker.until:
            return False, breaker
        breaker = _advance(breaker, BreakerEvent.COOL, probe_started=None)
    if breaker.state == BreakerState.HALF_OPEN:
        probing = breaker.probe_started
        if probing is not None and now < probing + breaker.cool_down:
            return False, breaker
        return True, msgspec.structs.replace(breaker, probe_started=now)
    return True, breaker


def record(breaker: Breaker, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
    """The breaker after an attempt's outcome at `now`."""
    if breaker.state == BreakerState.HALF_OPEN:
        if ok:
            return _advance(
                breaker,
                BreakerEvent.RECOVER,
                window_start=now,
                attempts=0,
                failures=0,
                probe_started=None,
                cool_down=0.0,
            )
        cool = min(policy.max_cool_down, max(policy.cool_down, breaker.cool_down * 2))
        return _advance(
            breaker, BreakerEvent.RELAPSE, until=now + cool, cool_down=cool, probe_started=None
        )
    if breaker.state == BreakerState.OPEN:
        return breaker  # an attempt that started before it opened: its outcome is moot
    if now - breaker.window_start >= policy.window:
        breaker = msgspec.structs.replace(breaker, window_start=now, attempts=0, failures=0)
    attempts, failures = breaker.attempts + 1, breaker.failures + (not ok)
    if attempts >= policy.min_attempts and failures >= policy.failure_ratio * attempts:
        return _advance(
            breaker,
            BreakerEvent.TRIP,
            attempts=0,
            failures=0,
            until=now + policy.cool_down,
            cool_down=policy.cool_down,
        )
    return msgspec.structs.replace(breaker, attempts=attempts, failures=failures)


def closed(breaker: Breaker) -> bool:
    """A closed breaker with nothing counted: it may be forgotten (a new one is the same)."""
    return breaker.state == BreakerState.CLOSED and breaker.attempts == 0
