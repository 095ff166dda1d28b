"""The planner statistics refresh (`adapters.sql.statistics`): when it runs, and that on
PostgreSQL the write that crosses a threshold does not wait for it."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.sql.drivers import PgDatabase
from adapters.sql.migrations import migrate
from adapters.sql.statistics import ANALYZE_AFTER, Statistics
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, UlidSource
from core.domain.commands import RecordEvent
from core.usecases import Deps, Services
from tests.contract.test_usecases import actor, receiver

pytestmark = pytest.mark.anyio


class Analyzer:
    """An ANALYZE that counts its runs and, if told, waits to be let go."""

    def __init__(self, *, hold: bool = False, fail: bool = False) -> None:
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.go = anyio.Event()
        if not hold:
            self.go.set()
        self.fail = fail

    async def __call__(self) -> None:
        self.started += 1
        try:
            await self.go.wait()
        except BaseException:
            self.cancelled += 1
            raise
        if self.fail:
            raise OSError("the database went away")
        self.finished += 1


async def test_a_refresh_runs_once_per_threshold_crossed() -> None:
    analyzer = Analyzer()
    statistics = Statistics(analyzer, background=False)
    await statistics.written(ANALYZE_AFTER[0] - 1)
    assert analyzer.started == 0
    await statistics.written(1)  # the first threshold, exactly
    assert analyzer.finished == 1
    await statistics.written(ANALYZE_AFTER[2])  # past the second and third at once: one
    assert analyzer.finished == 2
    await statistics.written(1)
    assert analyzer.finished == 2
    await statistics.written(ANALYZE_AFTER[3])
    await statistics.written(ANALYZE_AFTER[3] * 10)  # past the last: never again
    assert analyzer.finished == 3


async def test_a_failed_refresh_fails_no_write() -> None:
    analyzer = Analyzer(fail=True)
    statistics = Statistics(analyzer, background=False)
    await statistics.written(ANALYZE_AFTER[0])
    assert analyzer.started == 1


async def test_in_the_background_the_crossing_write_does_not_wait() -> None:
    analyzer = Analyzer(hold=True)
    statistics = Statistics(analyzer, background=True)
    with anyio.fail_after(1):
        await statistics.written(ANALYZE_AFTER[0])  # returns while the refresh waits
        await anyio.sleep(0.05)
    assert (analyzer.started, analyzer.finished) == (1, 0)
    await statistics.written(ANALYZE_AFTER[1])  # one at a time: not a second one
    await anyio.sleep(0.05)
    assert analyzer.started == 1
    analyzer.go.set()
    with anyio.fail_after(5):
        while not analyzer.finished:  # noqa: ASYNC110 - the refresh is a task of its own
            await anyio.sleep(0.01)
    await statistics.written(ANALYZE_AFTER[2])  # the next threshold starts another
    with anyio.fail_after(5):
        while analyzer.finished < 2:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    await statistics.close()


async def test_closing_stops_a_refresh_in_flight() -> None:
    analyzer = Analyzer(hold=True)
    statistics = Statistics(analyzer, background=True)
    await statistics.written(ANALYZE_AFTER[0])
    await anyio.sleep(0.05)
    with anyio.fail_after(5):
        await statistics.close()
    assert (analyzer.started, analyzer.cancelled, analyzer.finished) == (1, 1, 0)


async def test_a_failed_background_refresh_is_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    analyzer = Analyzer(fail=True)
    statistics = Statistics(analyzer, background=True)
    with caplog.at_level("DEBUG", logger="waypost.database"):
        await statistics.written(ANALYZE_AFTER[0])
        await anyio.sleep(0.05)
        await statistics.close()
    assert analyzer.started == 1
    assert "refreshing the planner statistics failed" in caplog.text


@pytest.mark.postgres
async def test_postgres_appends_refresh_the_log_statistics_without_waiting_for_them(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store's ANALYZE is slowed down by a second; the batch that crosses the first
    # threshold answers long before it ends, and the statistics are there afterwards.
    run = PgDatabase.run

    async def slowly(db: PgDatabase, statement: str) -> None:
        await anyio.sleep(1.0)
        await run(db, statement)

    monkeypatch.setattr(PgDatabase, "run", slowly)
    await migrate(fresh_database)
    store = await SqlStore.connect(fresh_database)
    try:
        services = Services(
            Deps(store, SystemClock(), UlidSource(), ReceiverLru(), combiner=Lanes())
        )
        who = await actor(services)
        made = await receiver(services, who)
        batch = [
            RecordEvent(name="app", version="1", release=str(i), platform_id="x", package="rpm",
                        payload={"build": i}, success=True, event_receiver_id=made.id)
            for i in range(ANALYZE_AFTER[0])
        ]  # fmt: skip
        started = anyio.current_time()
        await services.events.record_batch(who, batch)
        assert anyio.current_time() - started < 0.9
        conn = await asyncpg.connect(fresh_database)
        try:
            with anyio.fail_after(20):
                while (  # noqa: ASYNC110 - another process's work
                    await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'log'")
                    < ANALYZE_AFTER[0]
                ):
                    await anyio.sleep(0.05)
        finally:
            await conn.close()
    finally:
        await store.close()
