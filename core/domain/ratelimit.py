"""Rate limits as token buckets: how many requests a caller may make, and when the next.

A caller's bucket holds up to `burst` tokens and regains `per_second` tokens each
second; a request takes one. An empty bucket refuses, and says how long until a
token is back (the `Retry-After` of a 429). `Limiter` keeps a bucket per caller
and remembers at most `capacity` callers, forgetting the least recently seen
first, so memory stays bounded whatever the callers do; a forgotten caller comes
back with a full bucket.

Shared between processes, the same rule is kept as GCRA (the generic cell rate
algorithm: `gcra`, run inside Redis by adapters/redis/ratelimit.py): one number per
caller, the *theoretical arrival time* of its next request, instead of a bucket. A
request at `now` is admitted when that time is at most `(burst - 1) / per_second`
ahead of `now`, and pushes it `1 / per_second` further: `burst` requests at once, then
one every `1 / per_second` seconds, exactly as the bucket.

Pure: the time is an argument, in seconds on any clock that never goes back.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import msgspec


class Rate(msgspec.Struct, frozen=True):
    """`per_second` tokens regained each second, at most `burst` held."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second > 0):
            raise ValueError(f"a rate must be a positive number, not {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"a burst must be at least 1, not {self.burst!r}")


class Bucket:
    """One caller's tokens, as of the time `at`."""

    __slots__ = ("at", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.tokens = float(rate.burst)
        self.at = now

    def take(self, rate: Rate, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is (none taken)."""
        if now > self.at:
            self.tokens = min(float(rate.burst), self.tokens + (now - self.at) * rate.per_second)
            self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate.per_second


class Limiter:
    """A bucket per caller, for at most `capacity` callers (least recently seen forgotten)."""

    __slots__ = ("_buckets", "capacity", "rate")

    def __init__(self, rate: Rate, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a limiter must remember at least one caller, not {capacity!r}")
        self.rate = rate
        self.capacity = capacity
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, caller: str, now: float) -> float:
        """`Bucket.take` on `caller`'s bucket: 0.0 if allowed, else seconds to wait."""
        buckets = self._buckets
        bucket = buckets.get(caller)
        if bucket is None:
            bucket = buckets[caller] = Bucket(self.rate, now)
            if len(buckets) > self.capacity:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(caller)
        return bucket.take(self.rate, now)

    def __len__(self) -> int:
        return len(self._buckets)


def gcra(tat: float | None, now: float, rate: Rate) -> tuple[float, float | None]:
    """One request at `now` for a caller whose theoretical arrival time is `tat` (None: a
    new caller): (0.0, the new time) when admitted, (seconds to wait, None) when not."""
    interval = 1.0 / rate.per_second
    tolerance = interval * (rate.burst - 1)
    start = now if tat is None or tat < now else tat
    wait = start - tolerance - now
    if wait > 0:
        return wait, None
    return 0.0, start + interval
