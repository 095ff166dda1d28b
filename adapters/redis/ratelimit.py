"""Rate limits shared by every server process: GCRA inside Redis, on Redis's clock.

One Lua script (`GCRA`) reads a caller's theoretical arrival time, decides and writes
it back, atomically: Redis runs one script at a time, so any number of processes
asking at once are admitted exactly as the rate allows. The time is Redis's own
(`TIME`), the one clock every process shares; a process's clock never enters. The
rule is `core.domain.ratelimit.gcra`'s (tests/integration/test_redis_ratelimit.py runs
both side by side). Each key expires when its caller would be back to a full burst,
so Redis holds only recent callers.

Calls are bounded in time (`timeout`, connecting included) and never retried here: a
failure is reported at once to the caller, whose circuit breaker decides
(`core.usecases.ratelimits`).
"""

from __future__ import annotations

from typing import Final

import anyio
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.domain.ratelimit import Rate

__all__ = ["GCRA", "PREFIX", "RedisRateLimiter"]

PREFIX: Final = "waypost:rl:"
_MICROS: Final = 1_000_000

#: KEYS[1]: the caller's key. ARGV[1]: the emission interval (µs per request); ARGV[2]:
#: the tolerance, (burst - 1) intervals (µs); ARGV[3], tests only: the time (µs) to use
#: instead of Redis's. Returns 0 (admitted) or the µs to wait (refused, nothing written).
GCRA: Final = """
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local wait = tat - tolerance - now
if wait > 0 then
  return math.ceil(wait)
end
local after = tat + interval
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', math.ceil((after - now) / 1000) + 1)
return 0
"""


def _micros(rate: Rate) -> tuple[int, int]:
    interval = max(1, round(_MICROS / rate.per_second))
    return interval, interval * (rate.burst - 1)


class RedisRateLimiter:
    """The `SharedRateLimiter` port over one Redis server."""

    def __init__(self, client: redis.Redis, timeout: float) -> None:
        self._client = client
        self._script = client.register_script(GCRA)
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, timeout: float) -> RedisRateLimiter:
        """Connects lazily; every call (connecting included) takes at most `timeout`."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, timeout)

    async def take(self, bucket: str, rate: Rate, *, at: float | None = None) -> float:
        """`at` (seconds) replaces Redis's clock: for tests that compare with `gcra`."""
        interval, tolerance = _micros(rate)
        args: list[int] = [interval, tolerance]
        if at is not None:
            args.append(round(at * _MICROS))
        with anyio.fail_after(self.timeout):
            wait = await self._script(keys=[PREFIX + bucket], args=args)
        return int(wait) / _MICROS

    async def close(self) -> None:
        await self._client.aclose()
