"""Ingest benchmark: events through the use cases against the raw driver, same rows, same run.

    python bench/ingest.py [--backends sqlite,postgres] [--singles 2000] [--batches 20]
                           [--large 1000000]

For each backend it measures, in one process and one run:
- single-event transactions: `Events.record` one at a time, against two references;
- the same singles from 16 writers at once (group commit shares their transactions);
- batches of 100 and of 1000 events: `Events.record_batch`, against the same two
  references doing as many rows per transaction (the targets: at least 35% of the bare
  insert);
- how long each kind of write holds the tenant's writer lock, and so the most events
  per second one tenant can get (the lock serializes its writes, whatever the number
  of server processes);
- the latency of one append and of one page of `GET events` (the use case's list)
  with 10k and with `--large` events stored.

The references, each on a database of its own:
- "same rows by hand": the raw driver inserting the rows
  Waypost inserts for an event, into the real migrated schema with its indexes: lock
  and read the tenant's head, insert the log row and the event row, upsert the latest
  row, update the head and upsert the checkpoint; one transaction per event, one
  executemany per table per batch (stdlib sqlite3 on the event loop with Waypost's
  PRAGMAs and checkpoint policy; asyncpg). Waypost also reads the gate's inputs
  (groups, latest events) and validates the payload, so the ratio is what the code
  (use cases, domain, store) costs over the database doing the same work;
- "bare insert": the raw driver inserting only the event's own row into a table with
  a primary key alone (aiosqlite, asyncpg): what the log, read models and indexes cost
  together with the code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
import msgspec

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.sql.migrations import migrate
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, UlidSource
from core.domain.commands import CreateGroup, CreateTenant, RecordEvent, RegisterReceiver
from core.ports import EventFilter, PageRequest
from core.usecases import Actor, Deps, Services
from tests.servers import running_postgres  # the repository root is on sys.path above

BATCH = 1000  # events per batch when filling the store for the latency figures
BATCH_SIZES = (100, 1000)
WRITERS = 16
SCHEMA = {
    "type": "object",
    "properties": {"build": {"type": "integer"}, "commit": {"type": "string"}},
    "required": ["build"],
}
RAW_COLUMNS = (
    "id, tenant_id, name, version, release, platform_id, package, description, payload, "
    "success, event_receiver_id, created_at"
)


def command(receiver_id: str, i: int) -> RecordEvent:
    return RecordEvent(
        name="app",
        version=f"1.{i % 50}",
        release="1",
        platform_id="x86_64",
        package="rpm",
        payload={"build": i, "commit": "0123456789abcdef0123456789abcdef01234567"},
        success=True,
        event_receiver_id=receiver_id,
    )


def raw_row(ids: UlidSource, tenant: str, receiver: str, i: int) -> tuple[Any, ...]:
    cmd = command(receiver, i)
    return (
        ids.new_id(),
        tenant,
        cmd.name,
        cmd.version,
        cmd.release,
        cmd.platform_id,
        cmd.package,
        cmd.description,
        msgspec.json.encode(cmd.payload).decode(),
        True,
        receiver,
        time.time(),
    )


def hold(holds: list[float], events: int) -> dict[str, float]:
    """The writer lock's hold per transaction (median, ms), events per transaction, and what
    they allow one tenant at most: events per second if the lock were never free."""
    per = events / len(holds)
    median = statistics.median(holds)
    return {"ms": median * 1000, "events": per, "ceiling": per / median}


async def rate(n: int, work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return n / (time.perf_counter() - start)


async def latencies(count: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


# --- raw drivers ---------------------------------------------------------------------------


class RawSqlite:
    def __init__(self, path: str) -> None:
        self.path = path

    async def __aenter__(self) -> RawSqlite:
        self.lock = asyncio.Lock()
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.execute(
            "CREATE TABLE raw_events (id TEXT PRIMARY KEY, tenant_id TEXT, name TEXT, "
            "version TEXT, release TEXT, platform_id TEXT, package TEXT, description TEXT, "
            "payload TEXT, success BOOLEAN, event_receiver_id TEXT, created_at REAL)"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    async def single(self, row: tuple[Any, ...]) -> None:
        async with self.lock:  # one connection, one transaction at a time
            await self.db.execute("BEGIN IMMEDIATE")
            await self.db.execute(
                f"INSERT INTO raw_events ({RAW_COLUMNS}) VALUES ({', '.join('?' * 12)})", row
            )
            await self.db.execute("COMMIT")

    async def batch(self, rows: list[tuple[Any, ...]]) -> None:
        async with self.lock:
            await self.db.execute("BEGIN IMMEDIATE")
            await self.db.executemany(
                f"INSERT INTO raw_events ({RAW_COLUMNS}) VALUES ({', '.join('?' * 12)})", rows
            )
            await self.db.execute("COMMIT")


class PgConnections:
    """A single caller gets one plain asyncpg connection (no pool in its way); n
    concurrent callers a pool of n, as a server has."""

    def __init__(self, url: str, connections: int) -> None:
        self.url, self.connections = url, connections
        self.one: asyncpg.Connection | None = None
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> PgConnections:
        if self.connections == 1:
            self.one = await asyncpg.connect(self.url)
        else:
            self.pool = await asyncpg.create_pool(
                self.url, min_size=self.connections, max_size=self.connections
            )
        return self

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:  # a Connection or a pool's proxy of one
        if self.one is not None:
            yield self.one
            return
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            yield conn

    async def close(self) -> None:
        if self.one is not None:
            await self.one.close()
        if self.pool is not None:
            await self.pool.close()


class RawPostgres:
    """`connections` callers insert concurrently (see `PgConnections`)."""

    def __init__(self, url: str, connections: int = 1) -> None:
        self.url, self.connections = url, connections

    async def __aenter__(self) -> RawPostgres:
        self.db = await PgConnections(self.url, self.connections).open()
        async with self.db.acquire() as conn:
            await conn.execute(
                "CREATE TABLE raw_events (id TEXT PRIMARY KEY, tenant_id TEXT, name TEXT, "
                "version TEXT, release TEXT, platform_id TEXT, package TEXT, description TEXT, "
                "payload TEXT, success BOOLEAN, event_receiver_id TEXT, "
                "created_at DOUBLE PRECISION)"
            )
        marks = ", ".join(f"${i}" for i in range(1, 13))
        self.sql = f"INSERT INTO raw_events ({RAW_COLUMNS}) VALUES ({marks})"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    async def single(self, row: tuple[Any, ...]) -> None:
        async with self.db.acquire() as conn:
            await conn.execute(self.sql, *row)

    async def batch(self, rows: list[tuple[Any, ...]]) -> None:
        async with self.db.acquire() as conn, conn.transaction():
            await conn.executemany(self.sql, rows)


# --- the same writes by hand ----------------------------------------------------------------


class HandEvent:
    """What the hand-written references write for one event: the log row's and the event
    row's values, JSON encoded once, as Waypost does."""

    __slots__ = ("data", "id", "log_id", "now", "payload", "row")

    def __init__(self, ids: UlidSource, tenant: str, cmd: RecordEvent) -> None:
        receiver = cmd.event_receiver_id
        self.id, self.log_id = ids.new_id(), ids.new_id()
        self.now = datetime.now(UTC)  # noqa: TID251 - a benchmark reads the clock
        body = {
            "id": self.id,
            "tenant_id": tenant,
            "name": cmd.name,
            "version": cmd.version,
            "release": cmd.release,
            "platform_id": cmd.platform_id,
            "package": cmd.package,
            "description": cmd.description,
            "payload": cmd.payload,
            "success": cmd.success,
            "event_receiver_id": receiver,
            "created_at": self.now,
        }
        self.payload = msgspec.json.encode(cmd.payload).decode()
        self.data = msgspec.json.encode({"event": body}).decode()
        self.row = (cmd.name, cmd.version, cmd.release, cmd.platform_id, cmd.package)


HAND_LOG = (
    "INSERT INTO log (tenant_id, position, id, stream, stream_version, type, schema_version, "
    "correlation_id, causation_id, actor, occurred_at, data) VALUES ({})"
)
HAND_EVENT = (
    "INSERT INTO events (tenant_id, id, name, version, release, platform_id, package, "
    "description, payload, success, event_receiver_id, created_at) VALUES ({})"
)
HAND_LATEST = (
    "INSERT INTO latest (tenant_id, receiver_id, name, version, release, platform_id, package, "
    "event_id) VALUES ({}) ON CONFLICT (tenant_id, receiver_id, name, version, release, "
    "platform_id, package) DO UPDATE SET event_id = excluded.event_id"
)
HAND_CHECKPOINT = (
    "INSERT INTO checkpoints (tenant_id, position) VALUES ({}) "
    "ON CONFLICT (tenant_id) DO UPDATE SET position = excluded.position"
)


def _marks(style: str, n: int) -> str:
    return ", ".join("?" * n) if style == "qmark" else ", ".join(f"${i}" for i in range(1, n + 1))


class HandSqlite:
    """Waypost's writes by hand: stdlib sqlite3 on the loop, Waypost's PRAGMAs, checkpoints
    in a thread every 2000 rows (as Waypost does), the migrated schema."""

    def __init__(self, path: str, tenant: str, receiver: str) -> None:
        self.path, self.tenant, self.receiver = path, tenant, receiver
        self.checkpointer: threading.Thread | None = None
        self.checkpointed_at = 0
        self.log, self.event, self.latest, self.checkpoint = (
            sql.format(_marks("qmark", n))
            for sql, n in ((HAND_LOG, 12), (HAND_EVENT, 12), (HAND_LATEST, 8), (HAND_CHECKPOINT, 2))
        )

    async def __aenter__(self) -> HandSqlite:
        await migrate(f"sqlite:///{self.path}")
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=0",
                       "foreign_keys=ON", "wal_autocheckpoint=0"):  # fmt: skip
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("INSERT INTO log_heads (tenant_id, position) VALUES (?, 0)", (self.tenant,))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.checkpointer is not None:
            self.checkpointer.join()
        self.db.close()

    def _checkpoint(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        db.close()

    def _write(self, events: list[HandEvent]) -> None:
        db, tenant, receiver = self.db, self.tenant, self.receiver
        db.execute("BEGIN IMMEDIATE")
        (head,) = db.execute(
            "SELECT position FROM log_heads WHERE tenant_id = ?", (tenant,)
        ).fetchone()
        logs, rows, latest = [], [], []
        for offset, e in enumerate(events, start=head + 1):
            when = e.now.replace(tzinfo=None).isoformat(" ", "microseconds")
            logs.append((tenant, offset, e.log_id, e.id, 1, "event.recorded", 1, None, None,
                         "bench", when, e.data))  # fmt: skip
            rows.append((tenant, e.id, *e.row, "", e.payload, True, receiver, when))
            latest.append((tenant, receiver, *e.row, e.id))
        position = head + len(events)
        if len(events) == 1:
            db.execute(self.log, logs[0])
            db.execute(self.event, rows[0])
            db.execute(self.latest, latest[0])
        else:
            db.executemany(self.log, logs)
            db.executemany(self.event, rows)
            db.executemany(self.latest, latest)
        db.execute("UPDATE log_heads SET position = ? WHERE tenant_id = ?", (position, tenant))
        db.execute(self.checkpoint, (tenant, position))
        db.execute("COMMIT")
        if db.total_changes - self.checkpointed_at >= 2000 and not (
            self.checkpointer is not None and self.checkpointer.is_alive()
        ):
            self.checkpointed_at = db.total_changes
            self.checkpointer = threading.Thread(target=self._checkpoint, daemon=True)
            self.checkpointer.start()

    async def single(self, event: HandEvent) -> None:
        self._write([event])

    async def batch(self, events: list[HandEvent]) -> None:
        self._write(events)


class HandPostgres:
    """Waypost's writes by hand with asyncpg: the head locked FOR UPDATE, then one statement
    per table (one executemany per table for a batch), in one transaction. `connections`
    callers (see `PgConnections`) queue on the tenant's head lock, as Waypost's do."""

    def __init__(self, url: str, tenant: str, receiver: str, connections: int = 1) -> None:
        self.url, self.tenant, self.receiver = url, tenant, receiver
        self.connections = connections
        self.log, self.event, self.latest, self.checkpoint = (
            sql.format(_marks("numeric", n))
            for sql, n in ((HAND_LOG, 12), (HAND_EVENT, 12), (HAND_LATEST, 8), (HAND_CHECKPOINT, 2))
        )

    async def __aenter__(self) -> HandPostgres:
        await migrate(self.url)
        self.db = await PgConnections(self.url, self.connections).open()
        async with self.db.acquire() as conn:
            await conn.execute(
                "INSERT INTO log_heads (tenant_id, position) VALUES ($1, 0)", self.tenant
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    async def single(self, e: HandEvent) -> None:
        tenant, receiver = self.tenant, self.receiver
        async with self.db.acquire() as db, db.transaction():
            head = await db.fetchval(
                "SELECT position FROM log_heads WHERE tenant_id = $1 FOR UPDATE", tenant
            )
            position = head + 1
            await db.execute(self.log, tenant, position, e.log_id, e.id, 1, "event.recorded", 1,
                             None, None, "bench", e.now, e.data)  # fmt: skip
            await db.execute(self.event, tenant, e.id, *e.row, "", e.payload, True, receiver, e.now)
            await db.execute(self.latest, tenant, receiver, *e.row, e.id)
            await db.execute(
                "UPDATE log_heads SET position = $2 WHERE tenant_id = $1", tenant, position
            )
            await db.execute(self.checkpoint, tenant, position)

    async def batch(self, events: list[HandEvent]) -> None:
        tenant, receiver = self.tenant, self.receiver
        async with self.db.acquire() as db, db.transaction():
            head = await db.fetchval(
                "SELECT position FROM log_heads WHERE tenant_id = $1 FOR UPDATE", tenant
            )
            await db.executemany(self.log, [
                (tenant, head + n, e.log_id, e.id, 1, "event.recorded", 1, None, None, "bench",
                 e.now, e.data)
                for n, e in enumerate(events, start=1)
            ])  # fmt: skip
            await db.executemany(
                self.event,
                [(tenant, e.id, *e.row, "", e.payload, True, receiver, e.now) for e in events],
            )
            await db.executemany(self.latest, [(tenant, receiver, *e.row, e.id) for e in events])
            position = head + len(events)
            await db.execute(
                "UPDATE log_heads SET position = $2 WHERE tenant_id = $1", tenant, position
            )
            await db.execute(self.checkpoint, tenant, position)


Hand = HandSqlite | HandPostgres


# --- the run -------------------------------------------------------------------------------


class Held:
    """The store, timing each write transaction: how long it held the tenant's writer lock
    (from BEGIN to COMMIT; callers here never wait for it, so that is all it measures)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.holds: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)  # everything but `write`, the store's own

    @contextlib.asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[Any]:
        start = time.perf_counter()
        async with self.store.write(tenant_id) as tx:
            yield tx
        self.holds.append(time.perf_counter() - start)

    def take(self) -> list[float]:
        taken, self.holds = self.holds, []
        return taken


async def services_on(url: str) -> tuple[Services, Held]:
    await migrate(url)
    store = Held(await SqlStore.connect(url))
    return Services(
        Deps(store, SystemClock(), UlidSource(), ReceiverLru(), combiner=Lanes())
    ), store


async def gated_receiver(services: Services, actor: Actor) -> str:
    """A receiver that an enabled group gates with another member. Each of its events
    also reads the group and the other member's latest event for the artifact under the
    lock; the other member never records a success, so nothing completes."""
    members = [
        (
            await services.receivers.register(
                actor, RegisterReceiver(name=name, type="bench.gate", version="1", schema=SCHEMA)
            )
        )[0].id
        for name in ("gated", "other")
    ]
    await services.groups.create(
        actor,
        CreateGroup(name="release", type="bench.gate", version="1", event_receiver_ids=members),
    )
    return members[0]


async def latency(
    services: Services,
    *,
    store: Held,
    actor: Actor,
    receiver: str,
    counter: Iterator[int],
    large: int,
) -> dict[str, tuple[float, float]]:
    """p50/p99 of one append and of one page of events, with 10k and `large` stored."""
    tenant = actor.tenant_id
    result = {}

    async def fill_to(total: int) -> None:
        while True:
            async with store.read() as tx:
                head = await tx.log.head(tenant)
            if head >= total:
                return
            await services.events.record_batch(
                actor, [command(receiver, next(counter)) for _ in range(BATCH)]
            )

    async def one_append() -> None:
        await services.events.record(actor, command(receiver, next(counter)))

    async def one_page() -> None:
        await services.events.list(actor, EventFilter(), PageRequest())

    async def one_filtered_page() -> None:
        await services.events.list(actor, EventFilter(version="1.7"), PageRequest())

    for size in (10_000, large):
        await fill_to(size)
        result[f"append_{size}"] = await latencies(200, one_append)
        result[f"page_{size}"] = await latencies(200, one_page)
        result[f"filtered_page_{size}"] = await latencies(200, one_filtered_page)
    return result


async def bench_backend(
    name: str,
    url: str,
    *,
    raw: RawSqlite | RawPostgres,
    hand_at: Callable[[str, str], Hand],
    singles: int,
    batches: int,
    large: int,
) -> dict[str, Any]:
    services, store = await services_on(url)
    root = Actor(tenant_id="-", principal="bench").meta()
    tenant = await services.tenants.create(CreateTenant(slug="bench", name="Bench"), root)
    actor = Actor(tenant_id=tenant.id, principal="bench")
    receiver, _ = await services.receivers.register(
        actor, RegisterReceiver(name="build", type="bench.build", version="1", schema=SCHEMA)
    )
    ids = UlidSource()
    counter = iter(range(10**9))

    async def ours_singles() -> None:
        for _ in range(singles):
            await services.events.record(actor, command(receiver.id, next(counter)))

    async def raw_singles() -> None:
        for _ in range(singles):
            await raw.single(raw_row(ids, tenant.id, receiver.id, next(counter)))

    def ours_batches(size: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for _ in range(batches):
                await services.events.record_batch(
                    actor, [command(receiver.id, next(counter)) for _ in range(size)]
                )

        return run

    def raw_batches(size: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for _ in range(batches):
                await raw.batch(
                    [raw_row(ids, tenant.id, receiver.id, next(counter)) for _ in range(size)]
                )

        return run

    async def ours_concurrent_singles() -> None:
        """`WRITERS` callers at once: group commit shares their transactions."""

        async def writer() -> None:
            for _ in range(singles // WRITERS):
                await services.events.record(actor, command(receiver.id, next(counter)))

        await asyncio.gather(*(writer() for _ in range(WRITERS)))

    result: dict[str, Any] = {"backend": name}
    async with hand_at(tenant.id, receiver.id) as hand:

        async def hand_singles() -> None:
            for _ in range(singles):
                await hand.single(HandEvent(ids, tenant.id, command(receiver.id, next(counter))))

        def hand_batches(size: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                for _ in range(batches):
                    await hand.batch(
                        [
                            HandEvent(ids, tenant.id, command(receiver.id, next(counter)))
                            for _ in range(size)
                        ]
                    )

            return run

        # warm up every path (connections, caches, statement caches)
        await services.events.record(actor, command(receiver.id, 0))
        await raw.single(raw_row(ids, tenant.id, receiver.id, 0))
        await hand.single(HandEvent(ids, tenant.id, command(receiver.id, 0)))

        result["raw_single"] = await rate(singles, raw_singles)
        result["hand_single"] = await rate(singles, hand_singles)
        store.take()
        result["ours_single"] = await rate(singles, ours_singles)
        result["hold_single"] = hold(store.take(), singles)
        result["ours_single_16"] = await rate(singles // WRITERS * WRITERS, ours_concurrent_singles)
        result["hold_single_16"] = hold(store.take(), singles // WRITERS * WRITERS)
        for size in BATCH_SIZES:
            result[f"raw_batch{size}"] = await rate(batches * size, raw_batches(size))
            result[f"hand_batch{size}"] = await rate(batches * size, hand_batches(size))
            result[f"ours_batch{size}"] = await rate(batches * size, ours_batches(size))
            result[f"hold_batch{size}"] = hold(store.take(), batches * size)

    # The same singles to a receiver that an enabled group gates with another member.
    gated = await gated_receiver(services, actor)

    async def gated_singles() -> None:
        for _ in range(singles):
            await services.events.record(actor, command(gated, next(counter)))

    await services.events.record(actor, command(gated, 0))
    result["ours_gated_single"] = await rate(singles, gated_singles)

    result.update(
        await latency(
            services, store=store, actor=actor, receiver=receiver.id, counter=counter, large=large
        )
    )
    await store.close()
    return result


def report(results: list[dict[str, Any]], large: int) -> str:
    lines = [
        "| backend | path | Waypost ev/s | same rows by hand ev/s | ratio "
        "| bare insert ev/s | ratio (target) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows = [("single", "single", "single", "single")]
        rows.append((f"singles, {WRITERS} writers", "single_16", "single", "single"))
        rows += [(f"batch of {size}", f"batch{size}", f"batch{size}", f"batch{size}")
                 for size in BATCH_SIZES]  # fmt: skip
        for label, ours_key, hand_key, raw_key in rows:
            raw, hand, ours = r[f"raw_{raw_key}"], r[f"hand_{hand_key}"], r[f"ours_{ours_key}"]
            target = " (>= 35%)" if ours_key.startswith("batch") else ""
            lines.append(
                f"| {r['backend']} | {label} | {ours:,.0f} | {hand:,.0f} | {ours / hand:.0%} "
                f"| {raw:,.0f} | **{ours / raw:.0%}**{target} |"
            )
        gated, hand = r["ours_gated_single"], r["hand_single"]
        lines.append(
            f"| {r['backend']} | single, gated | {gated:,.0f} | ({hand:,.0f}: no gate reads) "
            f"| {gated / hand:.0%} | {r['raw_single']:,.0f} | {gated / r['raw_single']:.0%} |"
        )
    lines += [
        "",
        "| backend | writes | events per transaction | lock held (median ms) "
        "| one tenant's ceiling ev/s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        for label, key in [
            ("single", "hold_single"),
            (f"singles, {WRITERS} writers", "hold_single_16"),
            *[(f"batch of {size}", f"hold_batch{size}") for size in BATCH_SIZES],
        ]:
            h = r[key]
            lines.append(
                f"| {r['backend']} | {label} | {h['events']:,.1f} | {h['ms']:.2f} "
                f"| {h['ceiling']:,.0f} |"
            )
    lines += [
        "",
        "| backend | stored events | append p50 / p99 ms | page p50 / p99 ms "
        "| filtered page p50 / p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for size in (10_000, large):
            a, p, f = r[f"append_{size}"], r[f"page_{size}"], r[f"filtered_page_{size}"]
            lines.append(
                f"| {r['backend']} | {size:,} | {a[0]:.2f} / {a[1]:.2f} | {p[0]:.2f} / {p[1]:.2f} "
                f"| {f[0]:.2f} / {f[1]:.2f} |"
            )
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def backend(
    name: str, workdir: pathlib.Path
) -> AsyncIterator[tuple[str, RawSqlite | RawPostgres, Callable[[str, str], Hand]]]:
    if name == "sqlite":
        async with RawSqlite(str(workdir / "raw.db")) as raw:
            hand_path = str(workdir / "hand.db")
            yield (
                f"sqlite+aiosqlite:///{workdir / 'waypost.db'}",
                raw,
                lambda tenant, receiver: HandSqlite(hand_path, tenant, receiver),
            )
        return
    with running_postgres() as server:
        url = server.create_database("bench")
        raw_url = server.create_database("raw")
        hand_url = server.create_database("hand")
        async with RawPostgres(raw_url) as raw:
            yield url, raw, lambda tenant, receiver: HandPostgres(hand_url, tenant, receiver)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="waypost-bench-") as tmp:
        for name in args.backends.split(","):
            async with backend(name, pathlib.Path(tmp)) as (url, raw, hand_at):
                print(f"# {name}: running ...", file=sys.stderr, flush=True)
                results.append(
                    await bench_backend(
                        name,
                        url,
                        raw=raw,
                        hand_at=hand_at,
                        singles=args.singles,
                        batches=args.batches,
                        large=args.large,
                    )
                )
    print(report(results, args.large))


if __name__ == "__main__":
    asyncio.run(main())
