"""Every list filter of the events read model is served by an index on PostgreSQL.

The events table is filled with enough rows over several tenants for the
planner to prefer indexes where they help, ANALYZEd, and then each query that
`events.list` really sends (captured from the engine) is EXPLAINed with its
real parameters: no plan may read the events table with a sequential scan.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from adapters.sql.migrations import migrate
from adapters.sql.store import SqlStore
from core.ports import CompletionFilter, EventFilter, PageRequest, ReceiverFilter
from tests.servers import PostgresServer

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

TENANT = "01J00000000000000000TENANT"
OTHERS = ("01J00000000000000000OTHER1", "01J00000000000000000OTHER2")
ROWS = 40_000  # events of TENANT; each other tenant has half as many
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# name: 60 values, version: 17, release: 5, platform_id: 4, package: 3, receiver: 25;
# one event in ten is a failure; one event per second from T0.
FILL = """
INSERT INTO events (tenant_id, id, name, version, release, platform_id, package,
                    description, payload, success, event_receiver_id, created_at)
SELECT $1, lpad(i::text, 26, '0'), 'app' || (i % 60), 'v' || (i % 17), 'r' || (i % 5),
       'p' || (i % 4), 'k' || (i % 3), 'an event of the index test',
       '{"build": ' || i || ', "log": "' || repeat('x', 200) || '"}',
       i % 10 <> 0, 'R' || (i % 25), $2::timestamptz + i * interval '1 second'
FROM generate_series(1, $3) AS i
"""
COMPLETIONS = """
INSERT INTO completions (tenant_id, id, group_id, name, version, release, platform_id, package,
                         triggering_event_id, member_event_ids, completed_at)
SELECT $1, lpad(i::text, 26, '0'), 'G' || (i % 50), 'app' || (i % 60), 'v' || (i % 17),
       'r' || (i % 5), 'p' || (i % 4), 'k' || (i % 3), 'E', '[]',
       $2::timestamptz + i * interval '1 second'
FROM generate_series(1, $3) AS i
"""
RECEIVERS = """
INSERT INTO receivers (tenant_id, id, name, type, version, description, schema, fingerprint,
                       created_at)
SELECT $1, lpad(i::text, 26, '0'), 'r' || (i % 300), 't' || (i % 7), 'v' || (i % 11), '',
       '{}', 'f', $2::timestamptz
FROM generate_series(1, $3) AS i
"""


@pytest.fixture(scope="module")
def filled_database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database("indexes")
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
async def store(filled_database: str) -> AsyncIterator[SqlStore]:
    await migrate(filled_database)
    conn = await asyncpg.connect(filled_database)
    try:
        if await conn.fetchval("SELECT count(*) FROM events") == 0:
            for tenant, rows in ((TENANT, ROWS), *((o, ROWS // 2) for o in OTHERS)):
                await conn.execute(FILL, tenant, T0, rows)
                await conn.execute(COMPLETIONS, tenant, T0, rows // 4)
                await conn.execute(RECEIVERS, tenant, T0, rows // 20)
            await conn.execute("ANALYZE")
    finally:
        await conn.close()
    opened = await SqlStore.connect(filled_database)
    try:
        yield opened
    finally:
        await opened.close()


class Captured:
    """The statements an engine sends, with their parameters (asyncpg's positional style)."""

    def __init__(self, store: SqlStore) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        sa.event.listen(store.engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.statements.append((statement, tuple(parameters or ())))

    def take(self, table: str) -> tuple[str, tuple[Any, ...]]:
        [found] = [(s, p) for s, p in self.statements if f"FROM {table}" in s]
        self.statements.clear()
        return found


def scans(plan: dict[str, Any]) -> Iterator[tuple[str, str | None, str | None]]:
    """(node type, relation, index) of every node of a JSON plan."""
    yield plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name")
    for child in plan.get("Plans", []):
        yield from scans(child)


async def explain(url: str, statement: str, parameters: tuple[Any, ...]) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *parameters)
    finally:
        await conn.close()
    return list(scans(json.loads(raw)[0]["Plan"]))


MIDDLE = f"{ROWS // 2:026d}"
EVENT_FILTERS: dict[str, EventFilter] = {
    "none": EventFilter(),
    "name": EventFilter(name="app7"),
    "name+version": EventFilter(name="app7", version="v3"),
    "nvrpp": EventFilter(name="app7", version="v3", release="r2", platform_id="p1", package="k2"),
    "version": EventFilter(version="v3"),
    "release": EventFilter(release="r2"),
    "platform_id": EventFilter(platform_id="p1"),
    "package": EventFilter(package="k2"),
    "success": EventFilter(success=True),
    "failure": EventFilter(success=False),
    "receiver": EventFilter(event_receiver_id="R3"),
    "receiver+failure": EventFilter(event_receiver_id="R3", success=False),
    "since": EventFilter(since=T0 + timedelta(seconds=ROWS - 500)),
    "until": EventFilter(until=T0 + timedelta(seconds=300)),
    "since+until": EventFilter(
        since=T0 + timedelta(seconds=ROWS // 3), until=T0 + timedelta(seconds=ROWS // 3 + 200)
    ),
    "name+since": EventFilter(name="app7", since=T0 + timedelta(seconds=ROWS // 2)),
    "unknown version": EventFilter(version="nothing"),
    "unknown name": EventFilter(name="nothing"),
}
PAGES: dict[str, PageRequest] = {
    "first page": PageRequest(),
    "next page": PageRequest(after=MIDDLE),
    "ascending": PageRequest(order="asc", after=MIDDLE, limit=1000),
}


@pytest.mark.parametrize("page", PAGES.values(), ids=list(PAGES))
@pytest.mark.parametrize("where", EVENT_FILTERS.values(), ids=list(EVENT_FILTERS))
async def test_event_list_filters_use_an_index(
    store: SqlStore, filled_database: str, where: EventFilter, page: PageRequest
) -> None:
    captured = Captured(store)
    async with store.read() as tx:
        await tx.events.list(TENANT, where, page)
    plan = await explain(filled_database, *captured.take("events"))
    on_events = [node for node in plan if node[1] == "events"]
    assert on_events, plan
    assert all(node[0] != "Seq Scan" for node in on_events), plan


@pytest.mark.parametrize(
    "where",
    [
        CompletionFilter(),
        CompletionFilter(name="app7"),
        CompletionFilter(name="app7", version="v3"),
    ],
    ids=["group", "group+name", "group+name+version"],
)
async def test_completion_list_filters_use_an_index(
    store: SqlStore, filled_database: str, where: CompletionFilter
) -> None:
    captured = Captured(store)
    async with store.read() as tx:
        await tx.completions.list(TENANT, "G7", where, PageRequest())
    plan = await explain(filled_database, *captured.take("completions"))
    assert all(node[0] != "Seq Scan" for node in plan if node[1] == "completions"), plan


@pytest.mark.parametrize(
    "where",
    [
        ReceiverFilter(),
        ReceiverFilter(name="r7"),
        ReceiverFilter(name="r7", type="t3"),
        ReceiverFilter(fingerprint="f" * 64),
    ],
    ids=["none", "name", "name+type", "fingerprint"],
)
async def test_receiver_list_filters_use_an_index(
    store: SqlStore, filled_database: str, where: ReceiverFilter
) -> None:
    captured = Captured(store)
    async with store.read() as tx:
        await tx.receivers.list(TENANT, where, PageRequest())
    plan = await explain(filled_database, *captured.take("receivers"))
    assert all(node[0] != "Seq Scan" for node in plan if node[1] == "receivers"), plan
