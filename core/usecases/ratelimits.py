"""Rate limits shared by every server process, and what happens when they cannot be.

`RateLimits.take(kind, who)` admits a request of a caller (`who`: a credential, a
client address) of a kind of limit (`kind`: each has its own `Rate`):

- through the shared limiter (Redis: one count for all processes) while its circuit
  breaker (`core.domain.breaker`) lets calls through;
- through this process's own limiter (`core.domain.ratelimit.Limiter`) when there is
  no shared one, when the breaker is open, or when the call fails. A failing Redis
  never refuses a request for that reason, nor makes it fail: the limits become per
  process until Redis answers again, which the breaker's probe finds out.

Every change of the breaker's state goes to `on_change` (the entry point logs an
outage's start and end once, and shows the state in metrics and readiness).
The time is an argument (`clock`: seconds that never go back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from core.domain.breaker import Breaker, BreakerPolicy, BreakerState, ask, report
from core.domain.ratelimit import Limiter, Rate
from core.ports import SharedRateLimiter

#: Told (breaker before, breaker after, the failure that caused it or None).
OnChange = Callable[[Breaker, Breaker, str | None], None]


class RateLimits:
    def __init__(
        self,
        rates: Mapping[str, Rate],
        *,
        capacity: int,
        clock: Callable[[], float],
        shared: SharedRateLimiter | None = None,
        policy: BreakerPolicy | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.rates = dict(rates)
        self.local = {kind: Limiter(rate, capacity) for kind, rate in rates.items()}
        self.shared = shared
        self.policy = policy or BreakerPolicy.in_a_row(3, 5.0)
        self.breaker = Breaker()
        self.clock = clock
        self._on_change = on_change
        #: Decisions taken by this process alone although a shared limiter is configured.
        self.fallbacks = 0

    @property
    def sharing(self) -> bool:
        """Whether the limits are shared right now (a shared limiter, its breaker closed)."""
        return self.shared is not None and self.breaker.state == BreakerState.CLOSED

    async def take(self, kind: str, who: str) -> float:
        """0.0 when the request is admitted, else the seconds until one would be."""
        shared = self.shared
        if shared is not None:
            now = self.clock()
            before = self.breaker
            self.breaker, call = ask(before, now, self.policy)
            self._changed(before, None)
            if call:
                try:
                    wait = await shared.take(f"{kind}:{who}", self.rates[kind])
                except Exception as exc:  # any failure: decide here, never fail the request
                    self._outcome(ok=False, cause=f"{type(exc).__name__}: {exc}")
                else:
                    self._outcome(ok=True, cause=None)
                    return wait
            self.fallbacks += 1
        return self.local[kind].take(who, self.clock())

    def _outcome(self, *, ok: bool, cause: str | None) -> None:
        before = self.breaker
        self.breaker = report(before, ok, self.clock(), self.policy)
        self._changed(before, cause)

    def _changed(self, before: Breaker, cause: str | None) -> None:
        if self._on_change is not None and before.state != self.breaker.state:
            self._on_change(before, self.breaker, cause)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
