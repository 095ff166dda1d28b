"""SQLite's planner statistics: without them a filtered list of events walks the tenant's
primary key (tens of milliseconds at 300k events), with them it takes the filter's index.

The store runs ANALYZE when it opens a database that has log entries but no statistics,
and when its appends cross the same thresholds as PostgreSQL's refresh (`ANALYZE_AFTER`);
its reader connections, which load statistics only when they open, are reopened then.
Each test EXPLAINs the query that `events.list` really sends, on a connection of the store.
"""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

import pytest

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.sql import queries as q
from adapters.sql.drivers import SqliteDatabase
from adapters.sql.migrations import migrate
from adapters.sql.statistics import ANALYZE_AFTER
from adapters.sql.store import SQLITE_ANALYZE, SqlStore
from adapters.system import SystemClock, UlidSource
from core.domain.commands import RecordEvent
from core.ports import EventFilter, PageRequest
from core.usecases import Deps, Services
from tests.contract.test_usecases import actor, receiver

pytestmark = pytest.mark.anyio

TENANT = "01J00000000000000000TENANT"
ROWS = 30_000  # events, over 1,000 names: enough for the primary key walk to be the wrong plan
NAME_INDEX = "ix_events_nvrpp"


def fill(path: pathlib.Path, tenant: str, *, log_entry: bool) -> None:
    """`ROWS` events of `tenant` straight into the read model (and one log entry)."""
    raw = sqlite3.connect(path)
    rows = [
        (tenant, f"01E{i:023d}", f"app{i % 1000}", "1.0", str(i), "x86_64", "rpm", "", "{}", 1,
         "01R", float(i))
        for i in range(ROWS)
    ]  # fmt: skip
    raw.executemany(f"INSERT INTO events VALUES ({', '.join('?' * 12)})", rows)
    if log_entry:
        raw.execute(
            "INSERT INTO log VALUES (?, 1, 'E1', 's', 1, 'event.recorded', 1, NULL, NULL, 'a', "
            "0, '{}')",
            (tenant,),
        )
    raw.commit()
    raw.close()


def has_statistics(path: pathlib.Path) -> bool:
    raw = sqlite3.connect(path)
    try:
        found = raw.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()
        return found is not None
    finally:
        raw.close()


async def plan(store: SqlStore, tenant: str) -> str:
    """EXPLAIN QUERY PLAN of the `name=` filtered list, on one of the store's readers."""
    page, values = q.events_page(
        store._sql, tenant, EventFilter(name="app7"), PageRequest(limit=50), lambda d: d
    )
    assert page.query is not None
    async with store.read() as tx:
        raw: Any = tx._ctx.conn._raw  # type: ignore[attr-defined]
        rows = raw.execute(
            "EXPLAIN QUERY PLAN " + page.query.sql, page.query.bind_named(values)
        ).fetchall()
    return " / ".join(row[3] for row in rows)


async def test_a_database_opened_with_rows_and_no_statistics_is_analyzed(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "rows.db"
    url = f"sqlite:///{path}"
    await migrate(url)
    fill(path, TENANT, log_entry=True)
    assert not has_statistics(path)
    blind = sqlite3.connect(path)  # what the planner does without statistics
    [(_, _, _, guessed)] = blind.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM events WHERE tenant_id = ? AND name = ? "
        "ORDER BY id DESC LIMIT 50",
        (TENANT, "app7"),
    ).fetchall()
    blind.close()
    assert NAME_INDEX not in guessed

    store = await SqlStore.connect(url)
    try:
        assert has_statistics(path)
        assert NAME_INDEX in await plan(store, TENANT)
    finally:
        await store.close()


async def test_an_empty_database_is_not_analyzed_when_opened(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    await migrate(url)
    store = await SqlStore.connect(url)
    await store.close()
    assert not has_statistics(tmp_path / "empty.db")


async def test_appends_crossing_the_first_threshold_refresh_the_statistics(
    tmp_path: pathlib.Path,
) -> None:
    """Rows the store did not append (no log entry: not analyzed at opening), then appends:
    the first threshold crossed runs ANALYZE, and the readers that were open before it
    plan with the new statistics."""
    path = tmp_path / "grow.db"
    url = f"sqlite:///{path}"
    await migrate(url)
    store = await SqlStore.connect(url)
    try:
        services = Services(
            Deps(store, SystemClock(), UlidSource(), ReceiverLru(), combiner=Lanes())
        )
        who = await actor(services)
        made = await receiver(services, who)
        fill(path, who.tenant_id, log_entry=False)
        before = await plan(store, who.tenant_id)  # a reader, idle in the pool afterwards
        assert NAME_INDEX not in before
        assert not has_statistics(path)
        batch = [
            RecordEvent(name="app", version="1", release=str(i), platform_id="x", package="rpm",
                        payload={"build": i}, success=True, event_receiver_id=made.id)
            for i in range(ANALYZE_AFTER[0])
        ]  # fmt: skip
        await services.events.record_batch(who, batch)
        assert has_statistics(path)
        assert NAME_INDEX in await plan(store, who.tenant_id)
    finally:
        await store.close()


async def test_a_reader_busy_during_the_refresh_is_not_reused(tmp_path: pathlib.Path) -> None:
    """A reader that was reading while ANALYZE ran still holds the old statistics: it is
    closed when it is done, never handed out again."""
    path = tmp_path / "busy.db"
    await migrate(f"sqlite:///{path}")
    db = SqliteDatabase(str(path))
    try:
        async with db.read():
            assert await db.analyze(SQLITE_ANALYZE)
        assert db._readers == []
        async with db.read():  # a new one, opened with the statistics
            pass
        assert len(db._readers) == 1
    finally:
        await db.close()
