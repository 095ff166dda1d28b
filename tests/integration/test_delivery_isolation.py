"""Isolation of targets: a target that always fails and one that takes 10 s to answer do not
slow a healthy subscription down.

The same steady load runs twice, each on a fresh database with delivery running: once with
the healthy subscription alone, once with the failing and the slow ones beside it (every
subscription gets every message). The healthy target's lag (from a message's commit time to
its arrival) must keep its p99 within 10% of the first run's, or within 250 ms of it: on a
shared, loaded machine two runs' p99 differ by that much from noise alone (the figures of
each run are printed). Without isolation the difference is seconds: the slow target holds
a connection 10 s per message, and the failing one is retried without end.
"""

from __future__ import annotations

import pathlib
import statistics
import threading
import time
from datetime import datetime

import anyio
import msgspec
import pytest

from tests.integration.loopback_targets import Answer, Received, loopback_target
from tests.integration.test_delivery_targets import running, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RATE = 20  # events per second
SECONDS = 8


class _Time(msgspec.Struct):
    time: datetime


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def healthy_lags(tmp_path: pathlib.Path, *, neighbours: bool) -> list[float]:
    lags: list[float] = []
    lock = threading.Lock()
    every = threading.Event()

    def healthy(received: Received) -> Answer:
        arrived = time.time()
        sent = msgspec.json.decode(received.body, type=_Time).time.timestamp()
        with lock:
            lags.append(arrived - sent)
            if len(lags) >= RATE * SECONDS:
                every.set()
        return Answer(200)

    await anyio.Path(tmp_path).mkdir()
    settings = settings_for(tmp_path, retry_schedule_seconds=[1, 1, 1, 1, 1], timeout_seconds=12)
    with (
        loopback_target() as good,
        loopback_target() as bad,
        loopback_target() as slow,
    ):
        good.answer = healthy
        bad.answer = lambda _: Answer(500)
        slow.answer = lambda _: Answer(200, delay_seconds=10)
        async with running(settings) as world:
            await world.subscribe(good.url())
            if neighbours:
                await world.subscribe(bad.url())
                await world.subscribe(slow.url())
            start = time.monotonic()
            for n in range(RATE * SECONDS):
                await world.record(payload={"n": n})
                await anyio.sleep(max(0.0, start + (n + 1) / RATE - time.monotonic()))
            with anyio.fail_after(30):
                await anyio.to_thread.run_sync(every.wait)
            if neighbours:
                assert bad.requests, "the failing target was tried"
                assert slow.requests, "the slow target was tried"
    return lags


async def test_failing_and_slow_targets_do_not_slow_a_healthy_one(tmp_path: pathlib.Path) -> None:
    alone = await healthy_lags(tmp_path / "alone", neighbours=False)
    beside = await healthy_lags(tmp_path / "beside", neighbours=True)
    alone_p99, beside_p99 = p99(alone), p99(beside)
    print(
        f"healthy lag p50/p99: alone {statistics.median(alone) * 1000:.1f}/"
        f"{alone_p99 * 1000:.1f} ms, beside a failing and a 10 s target "
        f"{statistics.median(beside) * 1000:.1f}/{beside_p99 * 1000:.1f} ms"
    )
    assert beside_p99 <= max(alone_p99 * 1.1, alone_p99 + 0.25)
