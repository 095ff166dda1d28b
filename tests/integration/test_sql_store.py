"""What the contract suite does not pin down about the SQL store: URLs, times, digests, replay."""

from __future__ import annotations

import itertools
import pathlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.memory.store import MemoryStore
from adapters.sql import drivers  # noqa: F401 - registers its sqlite3 adapters
from adapters.sql.engine import UnsupportedDatabase, normalize_url
from adapters.sql.projection import COPY_AT_ROWS
from adapters.sql.tables import to_utc
from core.domain.commands import CreateGroup, CreateTenant, PatchGroup, RecordEvent
from core.domain.commands import RegisterReceiver as Register
from core.domain.model import Event, EventRecorded, Nvrpp, Tenant, TenantCreated
from core.ports import AppendMeta, NewEntry, Store
from core.usecases import Actor, Deps, Services
from tests.backends import open_store

pytestmark = pytest.mark.anyio

SQL_BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=SQL_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    async with open_store(request.param, request, tmp_path) as opened:
        yield opened


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///var/lib/waypost.db", "sqlite+aiosqlite:///var/lib/waypost.db"),
        ("sqlite+aiosqlite:////abs/waypost.db", "sqlite+aiosqlite:////abs/waypost.db"),
    ],
)
def test_urls_are_normalized_to_the_async_drivers(url: str, expected: str) -> None:
    assert normalize_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "sqlite://", "sqlite:///:memory:"]
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsupportedDatabase):
        normalize_url(url)


def test_sqlite_binds_none_and_bools_as_it_always_did() -> None:
    """The adapters `adapters.sql.drivers` registers (a shortcut for sqlite3's adapter
    look-up) bind the same values sqlite3 binds without them: NULL, 1 and 0."""
    assert sqlite3.adapters[(bool, sqlite3.PrepareProtocol)] is int  # registered on import
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a, b, c)")
    db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(True, False, None), (1, 0, None)])
    rows = db.execute("SELECT a, typeof(a), b, typeof(b), c, typeof(c) FROM t").fetchall()
    assert rows == [(1, "integer", 0, "integer", None, "null")] * 2
    db.close()


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_utc(datetime(2026, 1, 1))


async def test_times_round_trip_to_the_microsecond_in_utc(store: Store) -> None:
    tenant_id = "01J0000000000000000000000T"
    odd = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2)))
    tenant = Tenant(id=tenant_id, slug="times", name="Times", created_at=odd, updated_at=odd)
    event = Event(
        id="01J0000000000000000000000E",
        tenant_id=tenant_id,
        name="n",
        version="v",
        release="r",
        platform_id="p",
        package="k",
        description="",
        payload={"float": 1.5, "int": 2**62, "nested": {"list": [1, "two", None, True]}},
        success=True,
        event_receiver_id="01J0000000000000000000000R",
        created_at=odd + timedelta(microseconds=1),
    )
    async with store.write(tenant_id) as tx:
        await tx.append(
            [
                NewEntry(id="01J00000000000000000000001", event=TenantCreated(tenant=tenant),
                         expected_version=0, occurred_at=odd),
                NewEntry(id="01J00000000000000000000002", event=EventRecorded(event=event),
                         expected_version=0, occurred_at=odd),
            ],
            AppendMeta(actor="t"),
        )  # fmt: skip
    async with store.read() as rtx:
        [first, _] = await rtx.log.read(tenant_id)
        got = await rtx.tenants.get(tenant_id)
        got_event = await rtx.events.get(tenant_id, event.id)
    assert first.occurred_at == odd
    assert first.occurred_at.utcoffset() == timedelta(0)
    assert got is not None
    assert got.created_at == odd
    assert got.created_at.tzinfo is UTC
    assert got_event is not None
    assert got_event.created_at == event.created_at
    assert got_event.created_at.microsecond == 891012
    assert got_event.payload == event.payload


# --- digests: equal content, equal digest, on every backend ---------------------------------


class Ids:
    """Deterministic, increasing ULID-shaped ids: the same on every run and backend."""

    def __init__(self) -> None:
        self._n = itertools.count(1)

    def new_id(self) -> str:
        return f"01J{next(self._n):023d}"

    def new_ids(self, count: int) -> list[str]:
        return [self.new_id() for _ in range(count)]


class Clock:
    def __init__(self) -> None:
        self._ticks = itertools.count()

    def now(self) -> datetime:
        return T0 + timedelta(microseconds=7 * next(self._ticks))


KEY = Nvrpp(name="app", version="1", release="1", platform_id="x86_64", package="rpm")


def record(
    receiver_id: str, success: bool = True, payload: dict[str, object] | None = None
) -> RecordEvent:
    return RecordEvent(
        name=KEY.name,
        version=KEY.version,
        release=KEY.release,
        platform_id=KEY.platform_id,
        package=KEY.package,
        payload={"ok": success} if payload is None else payload,
        success=success,
        event_receiver_id=receiver_id,
    )


async def history(store: Store) -> Services:
    """The same story on any store: tenants, receivers, groups that fire, change and go."""
    services = Services(Deps(store, Clock(), Ids(), ReceiverLru(), combiner=Lanes()))
    root = AppendMeta(actor="root")
    who = []
    for slug in ("acme", "other"):
        tenant = await services.tenants.create(CreateTenant(slug=slug, name=slug), root)
        who.append(Actor(tenant_id=tenant.id, principal="p"))
    for actor in who:
        a, _ = await services.receivers.register(
            actor, Register(name="a", type="t", version="1", schema={})
        )
        b, _ = await services.receivers.register(
            actor, Register(name="b", type="t", version="1", schema={})
        )
        group = await services.groups.create(
            actor, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[a.id, b.id])
        )
        await services.events.record_batch(actor, [record(a.id), record(b.id)])
        for size in (COPY_AT_ROWS - 1, COPY_AT_ROWS):  # PostgreSQL: arrays, then COPY
            await services.events.record_batch(
                actor, [record(a.id, payload={"n": n, "s": 'é"\\'}) for n in range(size)]
            )
        await services.events.record(actor, record(b.id, success=False))
        await services.groups.patch(actor, group.id, PatchGroup(remove_receiver_ids=[b.id]))
        await services.events.record(actor, record(a.id))
        gone = await services.groups.create(
            actor, CreateGroup(name="gone", type="t", version="1", event_receiver_ids=[b.id])
        )
        await services.groups.delete(actor, gone.id)
    return services


async def test_equal_histories_give_the_memory_stores_digest(store: Store) -> None:
    memory = await history(MemoryStore())
    sql = await history(store)
    assert await sql.replay.digest() == await memory.replay.digest()


async def test_equal_histories_give_equal_logs(store: Store) -> None:
    """The log as the SQL store writes it (each envelope encoded once, payloads copied into
    it as they are) reads back as the memory store keeps it."""
    memory_store = MemoryStore()
    await history(memory_store)
    await history(store)
    for tenant_id in await _tenants(memory_store):
        async with memory_store.read() as mine, store.read() as theirs:
            expected = await mine.log.read(tenant_id, limit=10_000)
            assert await theirs.log.read(tenant_id, limit=10_000) == expected
            assert len(expected) > 2 * COPY_AT_ROWS


async def _tenants(store: Store) -> list[str]:
    async with store.read() as tx:
        return await tx.tenant_ids()


async def test_replay_in_batches_of_any_size_gives_the_same_read_models(store: Store) -> None:
    services = await history(store)
    before = await services.replay.digest()
    for batch in (1, 2, 1000):
        async with store.rebuild() as target:
            for tenant_id in await target.tenant_ids():
                async for envelopes in target.log(tenant_id, batch=batch):
                    await target.apply(tenant_id, envelopes)
        assert await services.replay.digest() == before, f"batch={batch}"


async def test_a_failed_rebuild_keeps_the_read_models(store: Store) -> None:
    services = await history(store)
    before = await services.replay.digest()

    async def interrupted_replay() -> None:
        async with store.rebuild() as target:
            [first, *_] = await target.tenant_ids()
            async for envelopes in target.log(first, batch=3):
                await target.apply(first, envelopes)
                raise RuntimeError("replay interrupted")

    with pytest.raises(RuntimeError):
        await interrupted_replay()
    assert await services.replay.digest() == before
