"""A circuit breaker: stop calling a service that keeps failing, try it again after a while.

One machine serves two uses, told apart by their `BreakerPolicy` only:

- per webhook subscription (`core.usecases.delivery`): outcomes are counted in a window
  of `window` seconds (a new window starts when the current one is over); when a window
  holds at least `min_attempts` outcomes of which a `failure_ratio` or more failed, the
  breaker opens. A failed probe opens it again for twice the previous cool-down, up to
  `max_cool_down`;
- on a service the whole process depends on (the shared rate limits' Redis,
  `core.usecases.ratelimits`): `BreakerPolicy.in_a_row(failures, cool_down)`, a count
  with no window that a success empties, so it opens at that many failures in a row, and
  every cool-down is the same.

States: *closed* (the service is called, outcomes counted), *open* (it is not: the
caller falls back or waits), *half-open* (one call, the probe, is let through to see
whether it works again).

- closed: each outcome is counted (`SUCCEEDED`, `FAILED`); the outcome that makes the
  count meet the policy trips it open (`TRIPPED`) for `cool_down`;
- open: once the cool-down is over, the next caller to ask is the probe (`COOLED`);
  outcomes of calls that started before it opened are moot;
- half-open: the probe's success closes it with an empty count (`SUCCEEDED`), its
  failure opens it again (`TRIPPED`, the cool-down doubled up to `max_cool_down`);
  callers meanwhile are refused. A probe that never reports (its caller was cancelled,
  its deliverer stopped) is replaced after the cool-down (`COOLED` again).

The transitions are data (`TRANSITIONS`, ARCHITECTURE.md rule 3). `plan` decides from
the breaker, what happened (a caller asks, a call succeeded, a call failed), the time
and the policy which event that is, if any; `apply` performs it. `ask` and `report` are
the two together. An outage begins when the breaker opens from closed (`began`) and
ends when it closes again (`ended`): what a caller logs once.

Pure: the time is an argument, in seconds on any clock that never goes back. A `Breaker`
is a value (every change makes a new one).
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
    "closed",
    "ended",
    "plan",
    "report",
    "start",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(StrEnum):
    #: A call worked: counted (closed), or the probe's success (half-open: closes).
    SUCCEEDED = "succeeded"
    #: A call failed; the count does not meet the policy yet.
    FAILED = "failed"
    #: The count met the policy (closed), or the probe failed (half-open).
    TRIPPED = "tripped"
    #: The cool-down is over: this caller is the probe (half-open: a lost probe replaced).
    COOLED = "cooled"


class Signal(StrEnum):
    """What the breaker is told."""

    ASK = "ask"
    SUCCESS = "success"
    FAILURE = "failure"


_S, _E = BreakerState, BreakerEvent

#: (state before, event) -> state after.
TRANSITIONS: Mapping[tuple[BreakerState, BreakerEvent], BreakerState] = MappingProxyType(
    {
        (_S.CLOSED, _E.SUCCEEDED): _S.CLOSED,
        (_S.CLOSED, _E.FAILED): _S.CLOSED,
        (_S.CLOSED, _E.TRIPPED): _S.OPEN,
        (_S.OPEN, _E.COOLED): _S.HALF_OPEN,
        (_S.HALF_OPEN, _E.SUCCEEDED): _S.CLOSED,
        (_S.HALF_OPEN, _E.TRIPPED): _S.OPEN,
        (_S.HALF_OPEN, _E.COOLED): _S.HALF_OPEN,
    }
)


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a breaker opens and for how long (see the module's docstring).

    `window`: seconds a count lasts; None: the count has no time limit and a success
    empties it (failures in a row)."""

    window: float | None = 60.0
    min_attempts: int = 10
    failure_ratio: float = 0.5
    cool_down: float = 15.0
    max_cool_down: float = 600.0

    def __post_init__(self) -> None:
        if self.window is not None and not (math.isfinite(self.window) and self.window > 0):
            raise ValueError(
                f"a breaker's window must be a positive number of seconds, not {self.window}"
            )
        if self.min_attempts < 1:
            raise ValueError(f"a breaker needs at least one attempt to judge: {self.min_attempts}")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError(f"a breaker's failure ratio is in (0, 1], not {self.failure_ratio}")
        if not (math.isfinite(self.cool_down) and math.isfinite(self.max_cool_down)):
            raise ValueError("a breaker's cool-downs must be finite numbers of seconds")
        if not 0 < self.cool_down <= self.max_cool_down:
            raise ValueError("a breaker's cool-downs must be 0 < cool_down <= max_cool_down")

    @classmethod
    def in_a_row(cls, failures: int, cool_down: float) -> BreakerPolicy:
        """Open after `failures` failures in a row; probe again after `cool_down` seconds,
        the same after a failed probe."""
        return cls(
            window=None,
            min_attempts=failures,
            failure_ratio=1.0,
            cool_down=cool_down,
            max_cool_down=cool_down,
        )


class Breaker(msgspec.Struct, frozen=True, kw_only=True):
    state: BreakerState = BreakerState.CLOSED
    #: When the state began: closed, the count's start; open, when it opened;
    #: half-open, when the probe started.
    since: float = 0.0
    #: Closed: outcomes counted since `since`, and how many of them failed.
    attempts: int = 0
    failures: int = 0
    #: The cool-down it opened with last (0: the policy's).
    cool_down: float = 0.0

    def cooling(self, policy: BreakerPolicy) -> float:
        """Its cool-down under `policy`."""
        return max(policy.cool_down, self.cool_down)

    @property
    def until(self) -> float:
        """Open: when its cool-down is over (when it opened with a cool-down of its own)."""
        return self.since + self.cool_down


def start(now: float) -> Breaker:
    """A closed breaker with an empty count starting at `now`."""
    return Breaker(since=now)


def _counted(breaker: Breaker, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
    """A closed breaker with one more outcome counted (in a new window when the current
    one is over; emptied by a success when the count has no window)."""
    if policy.window is None:
        if ok:
            return msgspec.structs.replace(breaker, attempts=0, failures=0)
    elif now - breaker.since >= policy.window:
        breaker = Breaker(since=now)
    return msgspec.structs.replace(
        breaker, attempts=breaker.attempts + 1, failures=breaker.failures + (not ok)
    )


def _meets(breaker: Breaker, policy: BreakerPolicy) -> bool:
    return (
        breaker.attempts >= policy.min_attempts
        and breaker.failures >= policy.failure_ratio * breaker.attempts
    )


def plan(
    breaker: Breaker, signal: Signal, now: float, policy: BreakerPolicy
) -> BreakerEvent | None:
    """The event that `signal` at `now` is for `breaker`; None when nothing changes."""
    state = breaker.state
    match signal:
        case Signal.ASK:
            cooled = now - breaker.since >= breaker.cooling(policy)
            return BreakerEvent.COOLED if state != BreakerState.CLOSED and cooled else None
        case Signal.SUCCESS | Signal.FAILURE:
            ok = signal == Signal.SUCCESS
            if state == BreakerState.HALF_OPEN:
                return BreakerEvent.SUCCEEDED if ok else BreakerEvent.TRIPPED
            if state == BreakerState.OPEN:
                return None  # a late answer to a call made before it opened
            counted = _counted(breaker, ok, now, policy)
            if _meets(counted, policy):
                return BreakerEvent.TRIPPED
            if counted == breaker:
                return None  # a success with nothing to forget
            return BreakerEvent.SUCCEEDED if ok else BreakerEvent.FAILED


def apply(breaker: Breaker, event: BreakerEvent, now: float, policy: BreakerPolicy) -> Breaker:
    """The breaker after `event` at `now`; an event its state does not allow is an error."""
    after = TRANSITIONS.get((breaker.state, event))
    if after is None:
        raise ValueError(f"a {breaker.state} breaker cannot take {event}")
    match event:
        case BreakerEvent.COOLED:
            return msgspec.structs.replace(breaker, state=after, since=now)
        case BreakerEvent.TRIPPED:
            cool = policy.cool_down
            if breaker.state == BreakerState.HALF_OPEN:  # a failed probe: longer each time
                cool = min(policy.max_cool_down, max(policy.cool_down, breaker.cool_down * 2))
            return Breaker(state=after, since=now, cool_down=cool)
        case _ if breaker.state == BreakerState.HALF_OPEN:  # the probe succeeded
            return Breaker(state=after, since=now)
        case _:
            return _counted(breaker, event == BreakerEvent.SUCCEEDED, now, policy)


def _step(breaker: Breaker, signal: Signal, now: float, policy: BreakerPolicy) -> Breaker:
    event = plan(breaker, signal, now, policy)
    return breaker if event is None else apply(breaker, event, now, policy)


def ask(breaker: Breaker, now: float, policy: BreakerPolicy) -> tuple[Breaker, bool]:
    """Whether a caller may call the service now, and the breaker after asking: closed,
    yes; open, no, unless the cool-down is over (then this caller is the probe);
    half-open, no while the probe is out."""
    event = plan(breaker, Signal.ASK, now, policy)
    if event is None:
        return breaker, breaker.state == BreakerState.CLOSED
    return apply(breaker, event, now, policy), True


def report(breaker: Breaker, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
    """The breaker after a call's outcome at `now`."""
    return _step(breaker, Signal.SUCCESS if ok else Signal.FAILURE, now, policy)


def closed(breaker: Breaker) -> bool:
    """A closed breaker with nothing counted: it may be forgotten (a new one is the same)."""
    return breaker.state == BreakerState.CLOSED and breaker.attempts == 0


def began(before: Breaker, after: Breaker) -> bool:
    """An outage began: the breaker opened from closed."""
    return before.state == BreakerState.CLOSED and after.state == BreakerState.OPEN


def ended(before: Breaker, after: Breaker) -> bool:
    """An outage ended: the breaker closed again."""
    return before.state != BreakerState.CLOSED and after.state == BreakerState.CLOSED
