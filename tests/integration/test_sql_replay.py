"""Replay's bulk path on the SQL stores: the rows it writes are the rows the appends wrote, to
the byte; the staged events mend rows that differ from the log and leave no table behind;
a replay that fails or stops midway changes nothing."""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.sql import tables as t
from adapters.sql.migrations import migrate
from adapters.sql.observe import StatementObserver
from adapters.sql.store import SqlStore
from core.domain.commands import CreateGroup, CreateTenant, PatchGroup, RecordEvent
from core.domain.commands import RegisterReceiver as Register
from core.domain.model import Nvrpp
from core.ports import AppendMeta
from core.usecases import Actor, Deps, Services
from tests.integration.test_sql_migrations import _schema_diffs as schema_diffs

pytestmark = pytest.mark.anyio

KEYS = [Nvrpp(name="app", version=f"1.{n}", release="1", platform_id="x86_64", package="rpm")
        for n in range(3)]  # fmt: skip
PAYLOADS: list[dict[str, Any]] = [
    {"build": 1, "commit": "0123abc"},
    {"unicode": "déjà vu ✓ \U0001f680", "quote": 'say "hi"\\', "ctl": "\t\n\u0001"},
    {"float": 0.1, "big": 2**63 + 5, "neg": -0.0, "exp": 1e300, "list": [None, True, {"a": []}]},
    {},
]


class Clock:
    """Times with and without microseconds, in and out of UTC (the SQLite text differs)."""

    def __init__(self) -> None:
        self._n = 0

    def now(self) -> datetime:
        self._n += 1
        zone = UTC if self._n % 2 else timezone(timedelta(hours=-5))
        return datetime(2026, 5, 6, 7, 8, 9, 0 if self._n % 3 else 123456, tzinfo=zone) + (
            timedelta(seconds=self._n)
        )


class Ids:
    def __init__(self) -> None:
        self._n = 0

    def new_id(self) -> str:
        self._n += 1
        return f"01J{self._n:023d}"

    def new_ids(self, count: int) -> list[str]:
        return [self.new_id() for _ in range(count)]


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path / 'waypost.db'}"
    else:
        found = request.getfixturevalue("fresh_database")
    await migrate(found)
    return found


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.connect(url)
    try:
        yield opened
    finally:
        await opened.close()


def services_on(store: SqlStore) -> Services:
    return Services(Deps(store, Clock(), Ids(), ReceiverLru(), combiner=Lanes()))


async def fill(services: Services, slugs: dict[str, int]) -> list[Actor]:
    """Tenants with `slugs[slug]` events each: a gated receiver, events of several payloads
    and artifacts, groups that fire, change and go."""
    made = []
    for slug, events in slugs.items():
        tenant = await services.tenants.create(
            CreateTenant(slug=slug, name=slug), AppendMeta(actor="root")
        )
        who = Actor(tenant_id=tenant.id, principal="p")
        build, _ = await services.receivers.register(
            who, Register(name="build", type="t", version="1", schema={})
        )
        group = await services.groups.create(
            who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[build.id])
        )
        commands = [
            RecordEvent(
                name=KEYS[n % 3].name, version=KEYS[n % 3].version, release="1",
                platform_id="x86_64", package="rpm", payload=PAYLOADS[n % len(PAYLOADS)],
                success=n % 5 != 4, event_receiver_id=build.id, description=f"#{n}",
            )
            for n in range(events)
        ]  # fmt: skip
        for start in range(0, events, 100):
            await services.events.record_batch(who, commands[start : start + 100])
        await services.groups.patch(who, group.id, PatchGroup(description="changed"))
        made.append(who)
    return made


async def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every read model's rows as the database holds them (text as text, in key order)."""
    order = {
        table.name: ", ".join(c.name for c in table.primary_key.columns) for table in t.READ_MODELS
    }
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return {
                name: conn.execute(f"SELECT * FROM {name} ORDER BY {keys}").fetchall()
                for name, keys in order.items()
            }
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return {
            name: [tuple(row) for row in await pg.fetch(f"SELECT * FROM {name} ORDER BY {keys}")]
            for name, keys in order.items()
        }
    finally:
        await pg.close()


def sqlite_schema(url: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


class Statements:
    """The catalogue names of the statements a store runs (through its observer)."""

    def __init__(self, store: SqlStore) -> None:
        self.names: list[str] = []
        system = "postgresql" if store.postgres else "sqlite"
        store.observe(StatementObserver(system=system, slow_ms=0, span=self._span))

    def _span(self, name: str, _attributes: dict[str, str]) -> AbstractContextManager[object]:
        self.names.append(name)
        return nullcontext()


async def test_a_replay_writes_every_read_model_row_as_the_appends_wrote_it(
    url: str, store: SqlStore
) -> None:
    services = services_on(store)
    await fill(services, {"acme": 700, "other": 300})
    before = await dump(url)
    assert len(before["events"]) == 1000
    seen = Statements(store)
    await services.replay.rebuild()
    assert await dump(url) == before
    assert "copy_replay_events" in seen.names
    assert seen.names.count("stage_events") == seen.names.count("unstage_events") == 2


async def run_sql(url: str, *statements: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            for statement in statements:
                conn.execute(statement)
        conn.close()
        return
    pg = await asyncpg.connect(url)
    try:
        for statement in statements:
            await pg.execute(statement)
    finally:
        await pg.close()


@pytest.mark.parametrize("after", [0, 150])
async def test_a_replay_mends_event_rows_that_differ_from_the_log(
    url: str, store: SqlStore, after: int
) -> None:
    """Event rows changed, removed or added behind the store's back are as the log makes
    them after a replay (PostgreSQL merges its staged events: this is what it must replace),
    whole or after a position; the other tenant's rows are left alone."""
    services = services_on(store)
    acme, other = await fill(services, {"acme": 300, "other": 200})
    before = await dump(url)
    events = sorted(row[1] for row in before["events"] if row[0] == acme.tenant_id)
    late = events[-1]  # made by an entry after any position replayed here
    stray = "01J" + "Z" * 23
    await run_sql(
        url,
        f"UPDATE events SET description = 'changed' WHERE id = '{late}'",
        f"UPDATE events SET payload = '{{}}' WHERE id = '{events[-2]}'",
        f"DELETE FROM events WHERE id = '{events[-3]}'",
        f"INSERT INTO events SELECT tenant_id, '{stray}', name, version, release, platform_id,"
        f" package, description, payload, success, event_receiver_id, created_at FROM events"
        f" WHERE id = '{late}'",
        f"UPDATE events SET description = 'theirs' WHERE tenant_id = '{other.tenant_id}'",
    )
    theirs = await dump(url)
    async with store.rebuild(acme.tenant_id, after) as target:
        assert sum([count async for count in target.replay(acme.tenant_id, 64)]) > 0
    rows = await dump(url)
    mine = [row for row in rows["events"] if row[0] == acme.tenant_id]
    stays = {stray} if after else set()  # a tail replay replaces only what its entries made
    assert sorted(mine) == sorted(
        [row for row in before["events"] if row[0] == acme.tenant_id]
        + [row for row in theirs["events"] if row[1] in stays]
    )
    assert [row for row in rows["events"] if row[0] != acme.tenant_id] == [
        row for row in theirs["events"] if row[0] != acme.tenant_id
    ]


async def test_a_replay_stopped_midway_changes_nothing_and_resumes_to_one_runs_result(
    url: str, store: SqlStore
) -> None:
    """Stopped inside a tenant (its events staged, not merged), then resumed."""
    services = services_on(store)
    await fill(services, {"solo": 2500})
    rows, digest = await dump(url), await services.replay.digest()
    schema = sqlite_schema(url) if url.startswith("sqlite") else None

    def stop(_count: int) -> None:
        raise KeyboardInterrupt

    for _ in range(2):  # twice: a stopped run leaves nothing that the next one trips on
        with pytest.raises(KeyboardInterrupt):
            await services.replay.rebuild(run="r", on_progress=stop)
        assert await dump(url) == rows
        if schema is not None:
            assert sqlite_schema(url) == schema
    assert await store.replay_done("r") == set()
    done = await services.replay.rebuild(run="r")
    assert (done.tenants, done.skipped) == (1, 0)
    assert await dump(url) == rows
    assert await services.replay.digest() == digest


async def test_a_replay_that_fails_midway_changes_nothing(url: str, store: SqlStore) -> None:
    """A log entry the read models refuse (a second event with an id already recorded,
    which no append can make) fails the write of its batch, after earlier batches were
    written: the error is the database's own, and the tenant's read models are as before."""
    services = services_on(store)
    [who] = await fill(services, {"solo": 5000})
    rows = await dump(url)
    copy_of_the_first_event = """
        INSERT INTO log (tenant_id, position, id, stream, stream_version, type, schema_version,
                         correlation_id, causation_id, actor, occurred_at, data)
        SELECT tenant_id, position + 1000000, id || 'x', stream || 'x', 1, type,
               schema_version, correlation_id, causation_id, actor, occurred_at, data
        FROM log WHERE type = 'event.recorded' ORDER BY position LIMIT 1
    """
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(copy_of_the_first_event)
        conn.close()
        refused: type[Exception] = sqlite3.IntegrityError
    else:
        pg = await asyncpg.connect(url)
        await pg.execute(copy_of_the_first_event)
        await pg.close()
        refused = asyncpg.UniqueViolationError
    with pytest.raises(refused):
        await services.replay.rebuild(who.tenant_id)
    assert await dump(url) == rows
    if url.startswith("sqlite"):
        assert await schema_diffs(url) == []
