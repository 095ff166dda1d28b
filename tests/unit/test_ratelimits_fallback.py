"""Rate limits through a shared limiter, and this process's own when it fails."""

from __future__ import annotations

import pytest

from core.domain.breaker import Breaker, BreakerPolicy, BreakerState, began, ended
from core.domain.ratelimit import Rate
from core.usecases.ratelimits import RateLimits

pytestmark = pytest.mark.anyio

RATE = Rate(per_second=1.0, burst=2)


class Shared:
    """A shared limiter that admits everything, or fails while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def take(self, bucket: str, rate: Rate) -> float:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("Connection refused")
        return 0.0

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limits(
    shared: Shared | None, clock: Clock, changes: list[tuple[str, str, str | None]]
) -> RateLimits:
    def changed(before: Breaker, after: Breaker, cause: str | None) -> None:
        changes.append((before.state, after.state, cause))

    return RateLimits(
        {"credential": RATE},
        capacity=100,
        clock=clock,
        shared=shared,
        policy=BreakerPolicy.in_a_row(2, 5.0),
        on_change=changed,
    )


def sharing(rates: RateLimits) -> bool:
    return rates.sharing


async def test_without_a_shared_limiter_this_process_limits() -> None:
    rates = limits(None, Clock(), [])
    assert [await rates.take("credential", "k") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert not sharing(rates)


async def test_a_failing_shared_limiter_falls_back_and_comes_back() -> None:
    shared, clock = Shared(), Clock()
    changes: list[tuple[str, str, str | None]] = []
    rates = limits(shared, clock, changes)
    assert [await rates.take("credential", "k") for _ in range(5)] == [0.0] * 5  # Redis admits
    assert sharing(rates)
    shared.down = True
    # failures: decided here at once, never raised; the second one opens the breaker
    decisions = [await rates.take("credential", "k") for _ in range(3)]
    assert decisions == [0.0, 0.0, 1.0]  # this process's bucket: burst 2, then a wait
    assert shared.calls == 5 + 2  # open: Redis is not asked any more
    assert rates.breaker.state == BreakerState.OPEN
    assert not sharing(rates)
    assert rates.fallbacks == 3
    [(before, after, cause)] = changes
    assert (before, after) == ("closed", "open")
    assert "Connection refused" in str(cause)
    # after the cooldown a probe fails: still open, no new change to report as an outage
    clock.now = 5.0
    await rates.take("credential", "k")
    assert shared.calls == 8
    assert [c[:2] for c in changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]
    # Redis is back: the next probe closes the breaker, the limits are shared again
    shared.down = False
    clock.now = 10.0
    assert await rates.take("credential", "k") == 0.0
    assert sharing(rates)
    assert changes[-1][:2] == ("half_open", "closed")
    outages = sum(
        began(Breaker(state=BreakerState(b)), Breaker(state=BreakerState(a))) for b, a, _ in changes
    )
    recoveries = sum(
        ended(Breaker(state=BreakerState(b)), Breaker(state=BreakerState(a))) for b, a, _ in changes
    )
    assert (outages, recoveries) == (1, 1)
