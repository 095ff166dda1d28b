"""Rate limits in a real Redis: the Lua script decides as `core.domain.ratelimit.gcra` does,
is shared by every limiter on the server, and fails fast when Redis cannot answer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from adapters.redis.ratelimit import PREFIX, RedisRateLimiter
from core.domain.ratelimit import Rate, gcra

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

RATE = Rate(per_second=4.0, burst=3)


@pytest.fixture
async def limiters(redis_db: str) -> AsyncIterator[list[RedisRateLimiter]]:
    made = [RedisRateLimiter.from_url(redis_db, timeout=1.0) for _ in range(2)]
    yield made
    for limiter in made:
        await limiter.close()


async def test_the_script_decides_as_the_pure_rule(limiters: list[RedisRateLimiter]) -> None:
    # The clock is given, but Redis expires keys in real time (when the caller would be
    # back to a full burst): a rate 400 times slower, gaps 400 times longer, keeps the keys
    # for minutes, so that a slow machine between two calls cannot expire one.
    slow = Rate(per_second=RATE.per_second / 400, burst=RATE.burst)
    limiter = limiters[0]
    tat: float | None = None
    now = 1_700_000_000.0
    for gap in [0, 0, 0, 0, 0.1, 0.25, 0.25, 0, 1.0, 0, 0, 0, 0, 0.2, 3.0, 0, 0]:
        now += gap * 400
        expected, after = gcra(tat, now, slow)
        tat = after if after is not None else tat
        assert await limiter.take("caller", slow, at=now) == pytest.approx(expected, abs=1e-3)


async def test_every_limiter_on_the_server_shares_one_count(
    limiters: list[RedisRateLimiter], redis_db: str
) -> None:
    """Two processes' limiters, on Redis's clock: the burst once, not once each."""
    rate = Rate(per_second=0.5, burst=3)
    decisions = [await limiters[n % 2].take("shared", rate) for n in range(5)]
    assert decisions[:3] == [0.0, 0.0, 0.0]
    assert all(1.0 < wait <= 2.0 for wait in decisions[3:])
    assert await limiters[0].take("another", rate) == 0.0  # another caller, another count
    raw = aioredis.Redis.from_url(redis_db)
    try:
        ttl = await raw.pttl(PREFIX + "shared")
    finally:
        await raw.aclose()
    assert 0 < ttl <= 6_100  # forgotten once the caller would be back to a full burst


async def test_a_refused_connection_fails_at_once() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    limiter = RedisRateLimiter.from_url(f"redis://127.0.0.1:{port}/0", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await limiter.take("x", RATE)
    assert time.monotonic() - started < 1.0  # no retries, no backoff
    await limiter.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that accepts connections and never answers (a Redis that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


async def test_a_redis_that_does_not_answer_fails_after_the_timeout(silent_server: int) -> None:
    limiter = RedisRateLimiter.from_url(f"redis://127.0.0.1:{silent_server}/0", timeout=0.2)
    started = time.monotonic()
    with pytest.raises((TimeoutError, OSError, RedisConnectionError)):
        await limiter.take("x", RATE)
    assert time.monotonic() - started < 1.5
    with anyio.fail_after(5):
        await limiter.close()
