"""The Store port over SQLite and PostgreSQL, on the drivers themselves (`drivers`).

Statements come compiled from one catalogue (`queries.Statements`), rows cross the
driver as tuples in the tables' column order, and values as the driver takes them
(`_PgCodec`, `_SqliteCodec`): no SQLAlchemy between a write and its database.

Transactions
    `write(tenant_id)` takes the tenant's writer lock before anything is read and
    holds it to commit. PostgreSQL: the tenant's `log_heads` row, made if missing and
    locked with SELECT ... FOR UPDATE in READ COMMITTED, sent with BEGIN as one
    simple query (one round trip; `queries.Statements.write_prologue`). Every later
    statement takes a new snapshot, so it sees whatever the previous lock holder
    committed; the next writer reads the head only after this one committed, so
    positions commit in order and a reader tailing "position > p" never skips one
    (docs/explanation/log-positions.md). SQLite: `BEGIN IMMEDIATE`, the database's
    one writer lock. `read()` is one snapshot: REPEATABLE READ, READ ONLY on
    PostgreSQL; a read transaction in WAL mode on SQLite. Any exception in a block
    rolls the whole block back, and so does a failed `append`, even if the block
    goes on.

    Round trips of a recorded event on PostgreSQL: BEGIN + lock; the head with the
    groups containing the receivers (`groups.containing` of a write transaction asks
    for both); the latest events; the stream version of a group that fires (kept for
    `append`: under the lock it cannot change); the append; COMMIT. On SQLite the
    same statements run inline, microseconds each.

Append
    Checks the expected versions (a stream expected new is checked by the unique
    (tenant_id, stream, stream_version) index; a stream expected at version n > 0
    is read, unless the transaction read it already), then `project` (the one
    projection, also used by replay) writes the log rows, the new head and the read
    models: on PostgreSQL in one statement (a table's one row as values, its many
    rows as `unnest`ed column arrays), on SQLite one executemany per table. Unique
    violations become domain errors.

Statistics
    `adapters.sql.statistics`: a young database gets a few early ANALYZEs as its log
    grows (PostgreSQL, in the background: so that cached plans do not keep their
    empty-table choices, seen: 80 ms instead of 0.1 ms per append at 30k events; SQLite,
    which has no statistics at all until one runs: so that a filtered list uses the
    filter's index, seen: 40-70 ms instead of about 1 ms for `name=` at 300k events; each
    refresh reopens its reader connections, which load statistics only when opened), and
    a SQLite database opened with rows but no statistics gets one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

import anyio.lowlevel
import asyncpg
import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql import queries as q
from adapters.sql import rebuild
from adapters.sql import tables as t
from adapters.sql.availability import Availability
from adapters.sql.drivers import (
    BUSY_WAIT_LIMIT,
    Connection,
    PgConnection,
    PgDatabase,
    Row,
    SqliteDatabase,
)
from adapters.sql.engine import create_engine, normalize_url
from adapters.sql.listen import CHANNEL, notify_statement
from adapters.sql.observe import ObservedConnection, StatementObserver
from adapters.sql.queries import NVRPP, Statements
from adapters.sql.statistics import Statistics
from adapters.sql.tables import to_utc
from core.domain.digest import Digest
from core.domain.envelope import REGISTRY, Envelope
from core.domain.errors import Conflict, StreamVersionConflict
from core.domain.idempotency import Answer, Record, in_use
from core.domain.model import (
    Completion,
    DomainEvent,
    Event,
    EventRecorded,
    Group,
    GroupCompleted,
    GroupCreated,
    GroupDeleted,
    GroupModified,
    Nvrpp,
    Receiver,
    ReceiverCreated,
    SubscriptionDisabled,
    SubscriptionPinged,
    Tenant,
    TenantCreated,
    TenantModified,
    stream_of,
)
from core.ports import (
    AppendMeta,
    CompletionFilter,
    EventFilter,
    GroupFilter,
    NewEntry,
    PageRequest,
    ReceiverFilter,
)

__all__ = ["SqlStore", "project"]

_encode = msgspec.json.Encoder().encode
_object = msgspec.json.Decoder(dict[str, Any]).decode
_ids = msgspec.json.Decoder(tuple[str, ...]).decode

ANALYZE = "ANALYZE " + ", ".join(
    f'"{table.name}"' for table in (t.log, t.log_heads, *t.READ_MODELS)
)


def _json(value: object) -> str:
    return _encode(value).decode()


# --- values across the driver --------------------------------------------------------------


#: Connections a PostgreSQL store keeps at most (its pool, no overflow).
DEFAULT_PG_CONNECTIONS = 10


class _PgCodec:
    """asyncpg: aware datetimes (read back in UTC), lists for arrays."""

    postgres = True

    @staticmethod
    def time(value: datetime) -> Any:
        return value if value.tzinfo is UTC else to_utc(value)

    @staticmethod
    def from_time(value: Any) -> datetime:
        return value  # type: ignore[no-any-return]  # timestamptz arrives aware, in UTC

    @staticmethod
    def ids(ids: Collection[str]) -> Any:
        return list(ids)

    @staticmethod
    def keys(keys: Collection[tuple[str, ...]]) -> list[Any]:
        """One array per part of the key."""
        return [list(part) for part in zip(*keys, strict=True)] if keys else [[]] * len(NVRPP)


class _SqliteCodec:
    """sqlite3: times as SQLAlchemy's fixed-width UTC text, sets as JSON arrays."""

    postgres = False
    _last: tuple[datetime | None, str] = (None, "")  # the last time written, and its text

    @classmethod
    def time(cls, value: datetime) -> Any:
        # The rows of one append share a few times (the clock is read once per request).
        last = cls._last
        if last[0] is value:
            return last[1]
        # msgspec's RFC 3339 text of the UTC time, "2026-01-31T12:00:00.123456Z" (without the
        # fraction when it is 0), made SQLAlchemy's "2026-01-31 12:00:00.123456": the same
        # text as isoformat(" ", "microseconds") of the naive UTC time, in a sixth of its time.
        text = _encode(value if value.tzinfo is UTC else to_utc(value))[1:-2].decode()
        text = text.replace("T", " ") if len(text) == 26 else text.replace("T", " ") + ".000000"
        cls._last = (value, text)
        return text

    @staticmethod
    def from_time(value: Any) -> datetime:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @staticmethod
    def ids(ids: Collection[str]) -> Any:
        return _encode(list(ids)).decode()

    @staticmethod
    def keys(keys: Collection[tuple[str, ...]]) -> list[Any]:
        return [_encode(list(keys)).decode()]


Codec = type[_PgCodec] | type[_SqliteCodec]


# --- the store -----------------------------------------------------------------------------


SQLITE_ANALYZE = ("PRAGMA analysis_limit=10000", "ANALYZE")
"""SQLite's statistics, from about 10,000 rows of each index (a few to tens of milliseconds
at 300k events). 2,000 was measured too few: a tenant's first 2,000 rows of an index are
all one tenant, and with statistics that say so the planner kept walking the primary key
for a `name=` filter (40-70 ms at 300k events instead of ~1 ms by `ix_events_nvrpp`)."""
SQLITE_HAS_STATISTICS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
SQLITE_HAS_ROWS = "SELECT 1 FROM log LIMIT 1"


class SqlStore:
    """Store port over PostgreSQL (asyncpg) or SQLite (sqlite3); see the module's docstring."""

    def __init__(self, db: PgDatabase | SqliteDatabase, availability: Availability) -> None:
        self._db = db
        self.availability = availability
        postgres = isinstance(db, PgDatabase)
        self._sql = q.catalogue("postgresql" if postgres else "sqlite")
        self._codec: Codec = _PgCodec if postgres else _SqliteCodec
        # the planner statistics follow the log entries this store commits
        self._statistics = (
            Statistics(partial(db.run, ANALYZE), background=True)
            if isinstance(db, PgDatabase)
            else Statistics(partial(db.analyze, SQLITE_ANALYZE), background=False)
        )
        self._observer: StatementObserver | None = None
        self._commit_observers: list[Callable[[str, int], None]] = []
        self.url: str | None = None  # what `connect` was given

    def observe(self, observer: StatementObserver | None) -> None:
        """Pass every later statement through `observer` (slow-query log, spans); None: stop."""
        self._observer = observer if observer is not None and observer.active else None

    def _watched(self, conn: Connection) -> Connection:
        observer = self._observer
        return conn if observer is None else ObservedConnection(conn, observer)

    @property
    def postgres(self) -> bool:
        return isinstance(self._db, PgDatabase)

    def on_commit(self, observer: Callable[[str, int], None]) -> None:
        """SQLite: call `observer(tenant_id, new head)` after every commit of this store that
        appended (the commit feed's in-process wake-ups). PostgreSQL needs none: its
        writes NOTIFY (`adapters.sql.listen`), which every process hears, this one too."""
        if self.postgres:
            raise TypeError("a PostgreSQL store announces its commits with NOTIFY")
        self._commit_observers.append(observer)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        availability: Availability | None = None,
        busy_timeout: float = BUSY_WAIT_LIMIT,
        **engine_options: Any,
    ) -> SqlStore:
        """A store over the database at `url` (postgresql://..., sqlite:///path).

        The schema must be migrated already (`adapters.sql.migrations.migrate`).
        PostgreSQL: `engine_options` go to SQLAlchemy's `create_async_engine`, whose
        pool the store draws its connections from (pool_size ...). SQLite takes none, but
        `busy_timeout`: how long a write waits for a lock another process holds.
        `availability`: shared with the other stores on the database (one log per outage).
        A database that cannot be reached or opened raises `Unavailable`.
        """
        availability = availability or Availability(url)
        normalized = normalize_url(url)
        if normalized.get_backend_name() == "sqlite":
            if engine_options:
                raise TypeError(f"a SQLite store takes no engine options: {sorted(engine_options)}")
            assert normalized.database is not None
            try:
                sqlite = SqliteDatabase(normalized.database, busy_timeout)
            except sqlite3.Error as exc:
                availability.raise_for(exc)
            store = cls(sqlite, availability)
            store.url = url
            if _unanalyzed(sqlite):
                await sqlite.analyze(SQLITE_ANALYZE)
            return store
        options = {"pool_size": DEFAULT_PG_CONNECTIONS, "max_overflow": 0, **engine_options}
        limit = int(options["pool_size"]) + int(options["max_overflow"])
        db = PgDatabase(create_engine(url, isolation_level="AUTOCOMMIT", **options), limit)
        try:  # fail here, not at the first request, when the database is unreachable
            await db.run("SELECT 1")
        except BaseException as exc:
            await db.close()
            availability.raise_for(exc)
        store = cls(db, availability)
        store.url = url
        return store

    @property
    def database(self) -> PgDatabase | SqliteDatabase:
        """The connections this store runs on: a SQLite delivery store shares them, so that
        the process has one writer connection (`adapters.sql.delivery`)."""
        return self._db

    @property
    def engine(self) -> AsyncEngine:
        """PostgreSQL: the SQLAlchemy engine whose pool serves the store (and its list queries)."""
        if not isinstance(self._db, PgDatabase):
            raise TypeError("a SQLite store has no SQLAlchemy engine: it speaks sqlite3 directly")
        return self._db.engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_ReadTx]:
        try:
            async with self._read() as tx:
                yield tx
        except Exception as exc:
            self._failed(exc)
        self.availability.ok()

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[_WriteTx]:
        try:
            async with self._write(tenant_id) as tx:
                yield tx
        except Exception as exc:
            self._failed(exc)
        self.availability.ok()

    @asynccontextmanager
    async def rebuild(
        self, tenant_id: str | None = None, after: int = 0
    ) -> AsyncIterator[_Rebuild]:
        try:
            async with self._rebuild(tenant_id, after) as target:
                yield target
        except Exception as exc:
            self._failed(exc)

    async def replay_done(self, run: str) -> set[str]:
        async with self.read() as tx:
            ctx = tx._ctx
            return {row[0] for row in await ctx.conn.fetch(ctx.sql.replay_done, (run,))}

    async def replay_finished(self, run: str) -> None:
        try:
            await self._replay_finished(run)
        except Exception as exc:
            self._failed(exc)

    async def purge_idempotency(self, before: datetime, limit: int) -> int:
        try:
            return await self._purge_idempotency(before, limit)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> NoReturn:
        """Raise `Unavailable` when `exc` says the database cannot serve, else `exc`."""
        self.availability.raise_for(exc)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_ReadTx]:
        db = self._db
        if isinstance(db, PgDatabase):
            async with db.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as pg:
                yield _ReadTx(_Context(self._watched(pg), self._sql, self._codec))
        else:
            async with db.read() as conn:
                yield _ReadTx(_Context(self._watched(conn), self._sql, self._codec))

    def read_stale(self, tenant_id: str) -> AbstractAsyncContextManager[_ReadTx]:
        """No replica here: the primary (`adapters.sql.replica.ReplicaStore` has one)."""
        return self.read()

    @asynccontextmanager
    async def _write(self, tenant_id: str) -> AsyncIterator[_WriteTx]:
        db, sql = self._db, self._sql
        if isinstance(db, PgDatabase):
            # BEGIN, make the head row if missing, lock it: one round trip, or three.
            prologue = sql.write_prologue(tenant_id)
            then = (
                [] if prologue else [(sql.create_head, (tenant_id,)), (sql.lock_head, (tenant_id,))]
            )
            async with db.transaction(prologue or q.WRITE_BEGIN, then) as pg:
                # The head is read by the first statement after the lock (see `_GroupReads`).
                tx = _WriteTx(_Context(self._watched(pg), sql, self._codec, tenant_id, None))
                yield tx
                await tx.idempotency.flush()
                if tx.head is not None and not pg.failed:
                    await _notify(pg, tenant_id, tx.head)
            if tx.appended:
                await self._statistics.written(tx.appended)
            return
        async with db.write() as conn:
            row = await conn.fetchrow(sql.head, (tenant_id,))
            if row is None:  # the tenant's first write: make its head row
                await conn.execute(sql.create_head, (tenant_id,))
            head = 0 if row is None else int(row[0])
            tx = _WriteTx(_Context(self._watched(conn), sql, self._codec, tenant_id, head))
            yield tx
            await tx.idempotency.flush()
            failed = conn.failed
        if tx.head is not None and not failed:
            for observer in self._commit_observers:
                observer(tenant_id, tx.head)
            await self._statistics.written(tx.appended)

    @asynccontextmanager
    async def _rebuild(self, tenant_id: str | None, after: int) -> AsyncIterator[_Rebuild]:
        db, sql = self._db, self._sql
        if after and tenant_id is None:
            raise ValueError("a rebuild after a position is a tenant's")
        deletes: list[tuple[q.Query, tuple[str, ...]]]
        if after:  # what the later entries made is replaced as they are replayed
            deletes = []
        elif tenant_id is None:
            deletes = [(delete, ()) for delete in sql.delete_read_models]
        else:
            deletes = [(delete, (tenant_id,)) for delete in sql.delete_tenant_replayed]
        if isinstance(db, PgDatabase):
            if tenant_id is None:
                # Every writer's first statements insert or lock a head row: an EXCLUSIVE
                # table lock waits for the writers in flight and holds back new ones until
                # the rebuild commits, while readers go on reading the old read models
                # (DELETE, not TRUNCATE, which would block them too).
                begin = (
                    "BEGIN ISOLATION LEVEL READ COMMITTED; LOCK TABLE log_heads IN EXCLUSIVE MODE"
                )
                then: list[tuple[q.Query, Sequence[Any]]] = []
            else:  # that tenant's writer lock only: the others go on writing
                begin = q.WRITE_BEGIN
                then = [(sql.create_head, (tenant_id,)), (sql.lock_head, (tenant_id,))]
            async with db.transaction(begin, then) as pg:
                conn = self._watched(pg)
                for delete, args in deletes:
                    await conn.execute(delete, args)
                yield _Rebuild(_Context(conn, sql, self._codec), tenant_id, after)
            return
        async with db.write() as raw:
            conn = self._watched(raw)
            for delete, args in deletes:
                await conn.execute(delete, args)
            yield _Rebuild(_Context(conn, sql, self._codec), tenant_id, after)

    async def _replay_finished(self, run: str) -> None:
        db, sql = self._db, self._sql
        if isinstance(db, PgDatabase):
            async with db.transaction("BEGIN") as pg:
                await pg.execute(sql.replay_forget, (run,))
            return
        async with db.write() as conn:
            await conn.execute(sql.replay_forget, (run,))

    async def _purge_idempotency(self, before: datetime, limit: int) -> int:
        db, sql = self._db, self._sql
        args = (self._codec.time(before), limit)
        if isinstance(db, PgDatabase):
            async with db.transaction("BEGIN ISOLATION LEVEL READ COMMITTED") as pg:
                return len(await pg.fetch(sql.idempotency_purge, args))
        async with db.write() as conn:
            return len(await conn.fetch(sql.idempotency_purge, args))

    async def close(self) -> None:
        await self._statistics.close()
        await self._db.close()


class _Context:
    """What every read and write of one transaction shares."""

    __slots__ = ("codec", "conn", "head", "known_versions", "sql", "tenant_id")

    def __init__(
        self,
        conn: Connection,
        sql: Statements,
        codec: Codec,
        tenant_id: str | None = None,
        head: int | None = None,
    ) -> None:
        self.conn = conn
        self.sql = sql
        self.codec = codec
        self.tenant_id = tenant_id  # a write transaction's tenant (it holds its lock)
        self.head = head  # the tenant's last position, once read (write transactions)
        self.known_versions: dict[str, int] = {}  # streams read or written under the lock

    async def read_head(self) -> int:
        assert self.tenant_id is not None
        row = await self.conn.fetchrow(self.sql.head, (self.tenant_id,))
        self.head = 0 if row is None else int(row[0])
        return self.head


def _unanalyzed(db: SqliteDatabase) -> bool:
    """A migrated SQLite database with log entries and no statistics (made by a version
    that ran no ANALYZE, or filled by a restore): the planner would guess."""
    raw = sqlite3.connect(db.path)
    try:
        if raw.execute(SQLITE_HAS_STATISTICS).fetchone() is not None:
            return False
        return raw.execute(SQLITE_HAS_ROWS).fetchone() is not None
    except sqlite3.Error:  # not migrated yet: nothing to plan for
        return False
    finally:
        raw.close()


# --- the projection: one function for append and replay ------------------------------------


async def project(
    ctx: _Context,
    tenant_id: str,
    applied: Sequence[tuple[int, DomainEvent]],
    log: tuple[list[tuple[Any, ...]], int] | None = None,
    *,
    payloads: dict[str, str] | None = None,
    records: list[tuple[Any, ...]] | None = None,
) -> None:
    """Apply domain events (with their log positions, in log order) to the read models.

    The one projection, for append and for replay. Rows are gathered per table
    and written together: PostgreSQL takes the hot tables (and `log`, the
    append's log rows and new head, if given) in one statement, SQLite one
    executemany per table. Where a later event of the batch overwrites an
    earlier one (a tenant or group changed twice, the latest event of a
    receiver for an artifact), only the last state is written, which is what
    applying them one by one would leave. An append's Idempotency-Key `records`
    (rows) go in the same statement on PostgreSQL.
    """
    if not applied:
        return
    rows = _Rows(tenant_id, ctx.codec, payloads or {})
    for _, event in applied:
        rows.add(event)
    checkpoint = applied[-1][0]
    if ctx.sql.postgres:
        await _write_postgres(ctx, rows, checkpoint, log, records or [])
    else:
        await _write_sqlite(ctx, rows, checkpoint, log, records or [])
    await rows.write_rare(ctx)


COPY_AT_ROWS = 48
"""PostgreSQL: log and event rows go by COPY when an append has at least this many (fewer
ride in the one statement: COPY costs a round trip or two more per table, which only
many rows repay). `bench/layout.py --parts pg` on a quiet machine: COPY / unnest per
event 99% at 40 rows, 96% at 48, 92% at 64, 88% at 100 (asyncpg checks every element
of an array parameter against two ABCs; COPY's binary rows skip that)."""


async def _write_postgres(
    ctx: _Context,
    rows: _Rows,
    checkpoint: int,
    log: tuple[list[tuple[Any, ...]], int] | None,
    records: list[tuple[Any, ...]],
) -> None:
    """The log rows, head, events, latest rows, completions, Idempotency-Key records and
    checkpoint: one statement.

    A table with one row passes its values, a table with more its columns as arrays
    (see `queries.pg_write`); `log` and `latest` rows without their tenant column. From
    `COPY_AT_ROWS` rows on, the log and event rows go by COPY (binary) first, and the
    statement does the rest."""
    log_rows = [] if log is None else log[0]
    copied = len(log_rows) >= COPY_AT_ROWS
    if copied:
        await ctx.conn.copy(ctx.sql.copy_log, log_rows)
        if rows.events:
            await ctx.conn.copy(ctx.sql.copy_events, rows.events)
    args: list[Any] = [rows.tenant_id, checkpoint]
    if log is not None:
        args.append(log[1])
    shape = []
    for table_rows, skip, by_copy in (
        (log_rows, 1, copied),
        (rows.events, 0, copied),
        (list(rows.latest.values()), 1, False),
        (rows.completions, 0, False),
        (records, 0, False),
    ):
        if not table_rows:
            shape.append(q.NONE)
        elif by_copy:
            shape.append(q.COPIED)
        elif len(table_rows) == 1:
            shape.append(q.ONE)
            args.extend(table_rows[0][skip:])
        else:
            shape.append(q.MANY)
            args.extend(list(zip(*table_rows, strict=True))[skip:])
    await ctx.conn.execute(ctx.sql.write(tuple(shape)), args)


async def _write_sqlite(
    ctx: _Context,
    rows: _Rows,
    checkpoint: int,
    log: tuple[list[tuple[Any, ...]], int] | None,
    records: list[tuple[Any, ...]],
) -> None:
    """One executemany per table, then the head and the checkpoint."""
    conn, sql = ctx.conn, ctx.sql
    for statement, table_rows in (
        (sql.insert_log, [] if log is None else log[0]),
        (sql.insert_event, rows.events),
        (sql.upsert_latest, list(rows.latest.values())),
        (sql.insert_completion, rows.completions),
        (sql.idempotency_insert, records),
    ):
        if len(table_rows) == 1:
            await conn.execute(statement, table_rows[0])
        elif table_rows:
            await conn.executemany(statement, table_rows)
    if log is not None:
        await conn.execute(sql.set_head, (log[1], rows.tenant_id))
    await conn.execute(sql.set_checkpoint, (rows.tenant_id, checkpoint))


class _Rows:
    """The read-model rows a batch of domain events makes, gathered per table, as tuples."""

    __slots__ = (
        "completions",
        "events",
        "groups",
        "latest",
        "payloads",
        "receivers",
        "tenant_id",
        "tenants",
        "time",
    )

    def __init__(self, tenant_id: str, codec: Codec, payloads: dict[str, str]) -> None:
        self.tenant_id = tenant_id
        self.time = codec.time
        self.payloads = payloads  # payloads the append encoded already, by event id
        self.tenants: dict[str, tuple[Any, ...]] = {}
        self.receivers: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.latest: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self.groups: dict[tuple[str, str], tuple[Any, ...] | None] = {}  # None: deleted
        self.completions: list[tuple[Any, ...]] = []

    def add(self, event: DomainEvent) -> None:
        time = self.time
        match event:
            case EventRecorded(event=e):
                payload = self.payloads.get(e.id)
                self.events.append(
                    (e.tenant_id, e.id, e.name, e.version, e.release, e.platform_id, e.package,
                     e.description, _json(e.payload) if payload is None else payload, e.success,
                     e.event_receiver_id, time(e.created_at))
                )  # fmt: skip
                key = (e.event_receiver_id, e.name, e.version, e.release, e.platform_id, e.package)
                self.latest[key] = (self.tenant_id, *key, e.id)
            case GroupCompleted(completion=c):
                self.completions.append(
                    (c.tenant_id, c.id, c.group_id, c.name, c.version, c.release, c.platform_id,
                     c.package, c.triggering_event_id, _json(c.member_event_ids),
                     time(c.completed_at))
                )  # fmt: skip
            case TenantCreated(tenant=x) | TenantModified(tenant=x):
                self.tenants[x.id] = (
                    x.id, x.slug, x.name, x.disabled, time(x.created_at), time(x.updated_at)
                )  # fmt: skip
            case ReceiverCreated(receiver=r):
                self.receivers.append(
                    (r.tenant_id, r.id, r.name, r.type, r.version, r.description,
                     _json(r.schema), r.fingerprint, time(r.created_at))
                )  # fmt: skip
            case GroupCreated(group=g) | GroupModified(group=g):
                self.groups[(g.tenant_id, g.id)] = (
                    g.tenant_id, g.id, g.name, g.type, g.version, g.description, g.enabled,
                    _json(g.event_receiver_ids), time(g.created_at), time(g.updated_at)
                )  # fmt: skip
            case GroupDeleted(group=g):
                self.groups[(g.tenant_id, g.id)] = None
            case SubscriptionPinged() | SubscriptionDisabled():
                pass  # messages only: subscriptions keep their own tables
            case _:  # pragma: no cover - the registry knows every type
                raise TypeError(f"no projection for {event!r}")

    async def write_rare(self, ctx: _Context) -> None:
        """Tenants, receivers and groups: rare changes, one statement each."""
        conn, sql = ctx.conn, ctx.sql
        if self.tenants:
            await conn.executemany(sql.upsert_tenant, list(self.tenants.values()))
        if self.receivers:
            await conn.executemany(sql.insert_receiver, self.receivers)
        if self.groups:
            await _project_groups(ctx, self.groups)


async def _project_groups(
    ctx: _Context, rows: dict[tuple[str, str], tuple[Any, ...] | None]
) -> None:
    """Groups changed by the batch: their final state replaces them and their member rows."""
    conn, sql, ids = ctx.conn, ctx.sql, ctx.codec.ids
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, group_id in rows:
        by_tenant.setdefault(tenant_id, []).append(group_id)
    for tenant_id, group_ids in by_tenant.items():
        await conn.execute(sql.delete_members, (tenant_id, ids(group_ids)))
        gone = [g for g in group_ids if rows[(tenant_id, g)] is None]
        if gone:
            await conn.execute(sql.delete_groups, (tenant_id, ids(gone)))
    present = [row for row in rows.values() if row is not None]
    if present:
        await conn.executemany(sql.upsert_group, present)
        # (tenant_id, receiver_id, group_id) for each member; row[7] is event_receiver_ids
        members = [(row[0], member, row[1]) for row in present for member in _ids(row[7])]
        if members:
            await conn.executemany(sql.insert_member, members)


# --- rows back into values -----------------------------------------------------------------


def _tenant(r: Row, codec: Codec) -> Tenant:
    id_, slug, name, disabled, created_at, updated_at = r
    return Tenant(
        id=id_,
        slug=slug,
        name=name,
        disabled=bool(disabled),
        created_at=codec.from_time(created_at),
        updated_at=codec.from_time(updated_at),
    )


def _receiver(r: Row, codec: Codec) -> Receiver:
    tenant_id, id_, name, type_, version, description, schema, fingerprint, created_at = r
    return Receiver(
        id=id_,
        tenant_id=tenant_id,
        name=name,
        type=type_,
        version=version,
        description=description,
        schema=_object(schema),
        fingerprint=fingerprint,
        created_at=codec.from_time(created_at),
    )


def _event(r: Row, codec: Codec) -> Event:
    (tenant_id, id_, name, version, release, platform_id, package, description, payload,
     success, receiver_id, created_at) = r  # fmt: skip
    return Event(
        id=id_,
        tenant_id=tenant_id,
        name=name,
        version=version,
        release=release,
        platform_id=platform_id,
        package=package,
        description=description,
        payload=_object(payload),
        success=bool(success),
        event_receiver_id=receiver_id,
        created_at=codec.from_time(created_at),
    )


def _group(r: Row, codec: Codec) -> Group:
    (tenant_id, id_, name, type_, version, description, enabled, receiver_ids, created_at,
     updated_at) = r  # fmt: skip
    return Group(
        id=id_,
        tenant_id=tenant_id,
        name=name,
        type=type_,
        version=version,
        description=description,
        enabled=bool(enabled),
        event_receiver_ids=_ids(receiver_ids),
        created_at=codec.from_time(created_at),
        updated_at=codec.from_time(updated_at),
    )


def _completion(r: Row, codec: Codec) -> Completion:
    (tenant_id, id_, group_id, name, version, release, platform_id, package, triggering,
     members, completed_at) = r  # fmt: skip
    return Completion(
        id=id_,
        tenant_id=tenant_id,
        group_id=group_id,
        name=name,
        version=version,
        release=release,
        platform_id=platform_id,
        package=package,
        triggering_event_id=triggering,
        member_event_ids=_ids(members),
        completed_at=codec.from_time(completed_at),
    )


def _record(r: Row, codec: Codec) -> Record:
    scope, key, fingerprint, status, content_type, location, body, created_at = r
    return Record(
        scope=scope,
        key=key,
        fingerprint=fingerprint,
        answer=Answer(
            status=int(status), body=bytes(body), content_type=content_type, location=location
        ),
        created_at=codec.from_time(created_at),
    )


def _envelope(r: Row, codec: Codec) -> Envelope:
    (tenant_id, position, id_, stream, stream_version, type_, schema_version, correlation_id,
     causation_id, actor, occurred_at, data) = r  # fmt: skip
    return Envelope(
        id=id_,
        type=type_,
        schema_version=schema_version,
        tenant_id=tenant_id,
        stream=stream,
        stream_version=stream_version,
        position=position,
        correlation_id=correlation_id,
        causation_id=causation_id,
        actor=actor,
        occurred_at=codec.from_time(occurred_at),
        data=_object(data),
    )


# --- transactions --------------------------------------------------------------------------


class _ReadTx:
    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self.tenants = _TenantReads(ctx)
        self.receivers = _ReceiverReads(ctx)
        self.events = _EventReads(ctx)
        self.groups = _GroupReads(ctx)
        self.latest = _LatestReads(ctx)
        self.completions = _CompletionReads(ctx)
        self.log = _LogReads(ctx)
        self.idempotency: _IdempotencyReads = _IdempotencyReads(ctx)

    async def tenant_ids(self) -> list[str]:
        return await _tenant_ids(self._ctx)

    async def replica_lag(self) -> float | None:
        """PostgreSQL standby: seconds behind its primary (0: it replayed all it received;
        None: it never replayed a transaction)."""
        row = await self._ctx.conn.fetchrow(self._ctx.sql.replica_lag, ())
        return None if row is None or row[0] is None else float(row[0])

    async def digest(self) -> str:
        """The memory store's digest: same sections, rows in the same order, same values."""
        conn, sql, codec = self._ctx.conn, self._ctx.sql, self._ctx.codec
        digest = Digest()
        for name, query, convert in (
            ("tenants", sql.digest_tenants, _tenant),
            ("receivers", sql.digest_receivers, _receiver),
            ("events", sql.digest_events, _event),
            ("groups", sql.digest_groups, _group),
        ):
            digest.section(name, [convert(row, codec) for row in await conn.fetch(query, ())])
        latest = [
            (row[0], row[1], dict(zip(NVRPP, row[2:7], strict=True)), row[7])
            for row in await conn.fetch(sql.digest_latest, ())
        ]
        # Python's order for the NVRPP part (the memory store sorts the same tuples).
        latest.sort(key=lambda r: (r[0], r[1], *(r[2][name] for name in NVRPP)))
        digest.section("latest", latest)
        digest.section(
            "completions",
            [_completion(row, codec) for row in await conn.fetch(sql.digest_completions, ())],
        )
        digest.section(
            "checkpoints",
            [(row[0], int(row[1])) for row in await conn.fetch(sql.digest_checkpoints, ())],
        )
        return digest.hexdigest()


class _WriteTx(_ReadTx):
    def __init__(self, ctx: _Context) -> None:
        super().__init__(ctx)
        assert ctx.tenant_id is not None
        self.tenant_id = ctx.tenant_id
        self.appended = 0
        self.idempotency: _IdempotencyWrites = _IdempotencyWrites(ctx)

    @property
    def head(self) -> int | None:
        """The tenant's last position once this transaction appended (None: it did not)."""
        return self._ctx.head if self.appended else None

    async def append(self, entries: Sequence[NewEntry], meta: AppendMeta) -> list[int]:
        return await self.append_many([(entries, meta)])

    async def append_many(
        self, parts: Sequence[tuple[Sequence[NewEntry], AppendMeta]]
    ) -> list[int]:
        entries = [entry for part, _ in parts for entry in part]
        if not entries:
            return []
        ctx, tenant_id = self._ctx, self.tenant_id
        streams = [stream_of(entry.event) for entry in entries]
        known = ctx.known_versions  # read or written by this transaction, under its lock
        to_read = {
            stream
            for stream, entry in zip(streams, entries, strict=True)
            if entry.expected_version > 0 and stream not in known
        }
        if to_read:
            stored = await _stream_versions(ctx, tenant_id, to_read)
            known.update({stream: stored.get(stream, 0) for stream in to_read})
        head = ctx.head if ctx.head is not None else await ctx.read_head()
        position = head
        time = ctx.codec.time
        versions: dict[str, int] = {}  # the streams' versions after this append
        unverified: list[str] = []  # streams taken as new: the unique index checks them
        rows: list[tuple[Any, ...]] = []
        applied: list[tuple[int, DomainEvent]] = []
        payloads: dict[str, str] = {}  # a recorded event's payload, as JSON: encoded once
        streams_left = iter(streams)
        for part, meta in parts:
            correlation_id, causation_id, actor = meta.correlation_id, meta.causation_id, meta.actor
            for entry in part:
                stream = next(streams_left)
                if stream in versions:
                    current = versions[stream]
                elif stream in known:
                    current = known[stream]
                else:
                    current = 0
                    unverified.append(stream)
                if entry.expected_version != current:
                    raise StreamVersionConflict(
                        f"Stream {stream} is at version {current}, not {entry.expected_version}."
                    )
                versions[stream] = current + 1
                position += 1
                type_name, schema_version, data = _encode_entry(entry.event, payloads)
                rows.append(
                    (tenant_id, position, entry.id, stream, current + 1, type_name,
                     schema_version, correlation_id, causation_id, actor,
                     time(entry.occurred_at), data)
                )  # fmt: skip
                applied.append((position, entry.event))
        records = self.idempotency.take()
        try:
            await project(
                ctx, tenant_id, applied, (rows, position), payloads=payloads, records=records
            )
        except BaseException as exc:
            ctx.conn.failed = True  # whatever the block does next, it ends with ROLLBACK
            refusal = _refusal(exc, entries, unverified)
            if refusal is None:
                raise
            raise refusal from exc
        ctx.head = position
        known.update(versions)
        self.appended += len(rows)
        return list(range(head + 1, position + 1))


def _encode_entry(event: DomainEvent, payloads: dict[str, str]) -> tuple[str, int, str]:
    """The log's (type, schema version, data as JSON) of an entry, encoded in one pass. A
    recorded event's payload is encoded first, kept in `payloads` for the events row,
    and copied into the log's JSON as it is (`msgspec.Raw`): once per payload."""
    if isinstance(event, EventRecorded):
        recorded = event.event
        payload = _encode(recorded.payload)
        payloads[recorded.id] = payload.decode()
        event = EventRecorded(event=msgspec.structs.replace(recorded, payload=msgspec.Raw(payload)))
    type_name, schema_version, data = REGISTRY.encode_json(event)
    return type_name, schema_version, data.decode()


async def _notify(conn: PgConnection, tenant_id: str, head: int) -> None:
    """Announce the commit to every listening process: NOTIFY, sent with the COMMIT in one
    simple query (no round trip of its own); delivered when, and only if, it commits."""
    statement = notify_statement(tenant_id, head)
    if statement is not None:
        conn.before_commit = statement
    else:  # pragma: no cover - tenant ids are ULIDs
        await conn.raw.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{tenant_id}:{head}")


async def _stream_versions(
    ctx: _Context, tenant_id: str, streams: Collection[str]
) -> dict[str, int]:
    rows = await ctx.conn.fetch(ctx.sql.stream_versions, (tenant_id, ctx.codec.ids(streams)))
    return {stream: int(version) for stream, version in rows}


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w.]+(?:, [\w.]+)*)")


def _violated(exc: BaseException) -> str | None:
    """The name of the unique constraint a driver's error reports, on either backend."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return exc.constraint_name
    if not isinstance(exc, sqlite3.IntegrityError):
        return None
    found = _SQLITE_UNIQUE.search(str(exc))
    if found is None:
        return None
    qualified = [c.split(".", 1) for c in found["columns"].split(", ")]
    table = t.metadata.tables.get(qualified[0][0])
    columns = [c[1] for c in qualified]
    if table is None:
        return None
    for constraint in table.constraints:
        if (
            isinstance(constraint, sa.UniqueConstraint | sa.PrimaryKeyConstraint)
            and [c.name for c in constraint.columns] == columns
        ):
            return str(constraint.name)
    return None


def _refusal(
    exc: BaseException, entries: Sequence[NewEntry] = (), unverified: Sequence[str] = ()
) -> Exception | None:
    """The domain error for a unique violation, as the memory store words it; else None."""
    match _violated(exc):
        case "uq_log_stream_version":
            if len(unverified) == 1:
                return StreamVersionConflict(
                    f"Stream {unverified[0]} exists already: it is not at version 0."
                )
            return StreamVersionConflict("A stream this append expected to be new exists already.")
        case "uq_tenants_slug":
            slugs = [e.event.tenant.slug for e in entries if isinstance(e.event, TenantCreated)]
            which = f"slug {slugs[0]!r}" if len(slugs) == 1 else "this slug"
            return Conflict(f"A tenant with {which} exists already.")
        case "uq_receivers_triple":
            return Conflict("An event receiver with this name, type and version exists already.")
        case "pk_idempotency_records":
            return in_use()
        case _:
            return None


class _Rebuild:
    def __init__(self, ctx: _Context, tenant_id: str | None = None, after: int = 0) -> None:
        self._ctx = ctx
        self._tenant_id = tenant_id
        self._after = after
        # A tenant's rebuild keeps its events for `replay` to merge (`delete_tenant_replayed`);
        # `apply` inserts them, so it empties them first.
        self._events_kept = tenant_id is not None and not after

    async def tenant_ids(self) -> list[str]:
        if self._tenant_id is not None:
            return [self._tenant_id]
        return await _tenant_ids(self._ctx)

    async def replay(self, tenant_id: str, batch: int = 1000) -> AsyncIterator[int]:
        """The log's entries decoded for the one projection (`rebuild.decode`), the rows
        written in bulk (`_write_bulk`), the events staged and merged at the end
        (`_merge_events`); on PostgreSQL each batch is decoded while the one before is
        written (`rebuild.pipelined`)."""
        ctx, after = self._ctx, self._after
        conn, statement, postgres = ctx.conn, ctx.sql.read_log_events, ctx.sql.postgres
        await conn.execute(ctx.sql.stage_events, ())

        async def fetch(position: int) -> Sequence[Row]:
            return await conn.fetch(statement, (tenant_id, position, batch))

        async def build(rows: Sequence[Row]) -> _Rows:
            gathered = _Rows(tenant_id, ctx.codec, {})
            add, decode = gathered.add, rebuild.decode
            step = rebuild.YIELD_EVERY if postgres else len(rows)
            for start in range(0, len(rows), step):
                for row in rows[start : start + step]:
                    add(decode(row[1], row[2], row[3]))
                if postgres:
                    await anyio.lowlevel.checkpoint()  # the write in flight goes on
            return gathered

        async def write(gathered: _Rows, last: int) -> None:
            if after:
                await _delete_made(ctx, tenant_id, gathered)
            await _write_bulk(ctx, gathered, last)

        async for count in rebuild.pipelined(
            fetch, build, write, after=after, batch=batch, overlap=postgres
        ):
            yield count
        await _merge_events(ctx, tenant_id, whole=not after)

    async def mark_done(self, run: str, tenant_id: str) -> None:
        await self._ctx.conn.execute(self._ctx.sql.replay_mark, (run, tenant_id))

    async def log(self, tenant_id: str, batch: int = 1000) -> AsyncIterator[list[Envelope]]:
        after = 0
        while True:
            entries = await _read_log(self._ctx, tenant_id, after, batch)
            if not entries:
                return
            yield entries
            if len(entries) < batch:
                return
            after = entries[-1].position

    async def apply(self, tenant_id: str, envelopes: Sequence[Envelope]) -> None:
        ctx = self._ctx
        if self._events_kept:
            await ctx.conn.execute(ctx.sql.delete_tenant_events, (tenant_id,))
            self._events_kept = False
        await project(
            self._ctx, tenant_id, [(e.position, REGISTRY.decode_envelope(e)) for e in envelopes]
        )


async def _delete_made(ctx: _Context, tenant_id: str, rows: _Rows) -> None:
    """Delete the rows of the insert-only receivers and completions that these rows replace;
    the events are merged (`_merge_events`), the other read models overwritten."""
    made_by = {"receivers": rows.receivers, "completions": rows.completions}
    for name, made in made_by.items():
        if made:  # each row's id is its second column
            ids = ctx.codec.ids([row[1] for row in made])
            await ctx.conn.execute(ctx.sql.delete_made[name], (tenant_id, ids))


async def _write_bulk(ctx: _Context, rows: _Rows, checkpoint: int) -> None:
    """Replay's write of a batch's rows: the events into their stage and the insert-only
    completions in bulk (`Connection.copy`), then what remains as an append writes it."""
    conn, sql = ctx.conn, ctx.sql
    if rows.events:
        await conn.copy(sql.copy_staged_events, rows.events)
    if rows.completions:
        await conn.copy(sql.copy_completions, rows.completions)
    rows.events, rows.completions = [], []  # written: the append's writers do the rest
    if ctx.sql.postgres:
        await _write_postgres(ctx, rows, checkpoint, None, [])
    else:
        await _write_sqlite(ctx, rows, checkpoint, None, [])
    await rows.write_rare(ctx)


async def _merge_events(ctx: _Context, tenant_id: str, *, whole: bool) -> None:
    """The staged events replace the tenant's (all of them after a whole log,
    those with a staged id after a tail); a row equal to its staged one stays as it is."""
    conn, sql = ctx.conn, ctx.sql
    if whole:
        await conn.execute(sql.merge_delete_events, (tenant_id,))
    else:
        await conn.execute(sql.merge_replace_events, ())
    await conn.execute(sql.merge_insert_events, ())
    await conn.execute(sql.unstage_events, ())


async def _tenant_ids(ctx: _Context) -> list[str]:
    """Every tenant that has a log (a committed write), in Python's order."""
    return sorted(row[0] for row in await ctx.conn.fetch(ctx.sql.tenant_ids, ()))


async def _read_log(ctx: _Context, tenant_id: str, after: int, limit: int) -> list[Envelope]:
    rows = await ctx.conn.fetch(ctx.sql.read_log, (tenant_id, after, limit))
    codec = ctx.codec
    return [_envelope(row, codec) for row in rows]


# --- reads ---------------------------------------------------------------------------------


class _Reads:
    __slots__ = ("_ctx",)

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx


class _TenantReads(_Reads):
    async def get(self, tenant_id: str) -> Tenant | None:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.tenant_by_id, (tenant_id,))
        return None if row is None else _tenant(row, ctx.codec)

    async def by_slug(self, slug: str) -> Tenant | None:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.tenant_by_slug, (slug,))
        return None if row is None else _tenant(row, ctx.codec)

    async def list(self, page: PageRequest) -> list[Tenant]:
        ctx = self._ctx
        found, values = q.tenants_page(ctx.sql, page)
        return [_tenant(row, ctx.codec) for row in await ctx.conn.page(found, values)]


class _ReceiverReads(_Reads):
    async def get(self, tenant_id: str, receiver_id: str) -> Receiver | None:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.receiver_by_id, (tenant_id, receiver_id))
        return None if row is None else _receiver(row, ctx.codec)

    async def by_triple(
        self, tenant_id: str, name: str, type_: str, version: str
    ) -> Receiver | None:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.receiver_by_triple, (tenant_id, name, type_, version))
        return None if row is None else _receiver(row, ctx.codec)

    async def get_many(self, tenant_id: str, receiver_ids: Collection[str]) -> dict[str, Receiver]:
        if not receiver_ids:
            return {}
        ctx = self._ctx
        rows = await ctx.conn.fetch(
            ctx.sql.receivers_by_ids, (tenant_id, ctx.codec.ids(set(receiver_ids)))
        )
        found = {receiver.id: receiver for receiver in (_receiver(r, ctx.codec) for r in rows)}
        return {i: found[i] for i in receiver_ids if i in found}

    async def list(
        self, tenant_id: str, where: ReceiverFilter, page: PageRequest
    ) -> list[Receiver]:
        ctx = self._ctx
        found, values = q.receivers_page(ctx.sql, tenant_id, where, page)
        return [_receiver(row, ctx.codec) for row in await ctx.conn.page(found, values)]


class _EventReads(_Reads):
    async def get(self, tenant_id: str, event_id: str) -> Event | None:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.event_by_id, (tenant_id, event_id))
        return None if row is None else _event(row, ctx.codec)

    async def list(self, tenant_id: str, where: EventFilter, page: PageRequest) -> list[Event]:
        ctx = self._ctx
        found, values = q.events_page(ctx.sql, tenant_id, where, page, ctx.codec.time)
        return [_event(row, ctx.codec) for row in await ctx.conn.page(found, values)]


class _GroupReads(_Reads):
    async def get(self, tenant_id: str, group_id: str) -> Group | None:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.group_by_id, (tenant_id, group_id))
        return None if row is None else _group(row, ctx.codec)

    async def containing(self, tenant_id: str, receiver_ids: Collection[str]) -> list[Group]:
        if not receiver_ids:
            return []
        ctx = self._ctx
        args = (tenant_id, ctx.codec.ids(receiver_ids))
        with_head = ctx.sql.groups_containing_and_head
        if with_head is not None and ctx.head is None and ctx.tenant_id == tenant_id:
            # A write transaction's first read (PostgreSQL): the head comes along.
            rows = await ctx.conn.fetch(with_head, args)
            if rows:
                ctx.head = int(rows[0][0])
            groups = [_group(row[1:], ctx.codec) for row in rows if row[2] is not None]
        else:
            groups = [
                _group(row, ctx.codec)
                for row in await ctx.conn.fetch(ctx.sql.groups_containing, args)
            ]
        return sorted(groups, key=lambda g: g.id)

    async def list(self, tenant_id: str, where: GroupFilter, page: PageRequest) -> list[Group]:
        ctx = self._ctx
        found, values = q.groups_page(ctx.sql, tenant_id, where, page)
        return [_group(row, ctx.codec) for row in await ctx.conn.page(found, values)]


class _LatestReads(_Reads):
    async def get_many(
        self, tenant_id: str, receiver_ids: Collection[str], keys: Collection[Nvrpp]
    ) -> dict[tuple[str, Nvrpp], Event]:
        if not receiver_ids or not keys:
            return {}
        ctx = self._ctx
        codec = ctx.codec
        wanted = {(k.name, k.version, k.release, k.platform_id, k.package) for k in keys}
        receivers = set(receiver_ids)
        if len(receivers) == 1 and len(wanted) == 1:
            [receiver], [key] = receivers, wanted
            rows = await ctx.conn.fetch(ctx.sql.latest_event, (tenant_id, receiver, *key))
        else:
            rows = await ctx.conn.fetch(
                ctx.sql.latest_events, (tenant_id, codec.ids(receivers), *codec.keys(wanted))
            )
        found = {}
        for row in rows:
            event = _event(row, codec)
            found[(event.event_receiver_id, event.key)] = event
        return found


class _CompletionReads(_Reads):
    async def list(
        self, tenant_id: str, group_id: str, where: CompletionFilter, page: PageRequest
    ) -> list[Completion]:
        ctx = self._ctx
        found, values = q.completions_page(ctx.sql, tenant_id, group_id, where, page)
        return [_completion(row, ctx.codec) for row in await ctx.conn.page(found, values)]


class _IdempotencyReads(_Reads):
    async def get(self, scope: str, key: str) -> Record | None:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.idempotency_get, (scope, key))
        return None if row is None else _record(row, ctx.codec)


class _IdempotencyWrites(_IdempotencyReads):
    """Records staged for the transaction: written by its next append (in the append's
    statement on PostgreSQL), or by `flush` before the commit."""

    __slots__ = ("_staged",)

    def __init__(self, ctx: _Context) -> None:
        super().__init__(ctx)
        self._staged: list[tuple[Any, ...]] = []

    def add(self, record: Record) -> None:
        answer = record.answer
        self._staged.append(
            (record.scope, record.key, record.fingerprint, answer.status, answer.content_type,
             answer.location, answer.body, self._ctx.codec.time(record.created_at))
        )  # fmt: skip

    async def remove(self, scope: str, key: str) -> None:
        ctx = self._ctx
        await ctx.conn.execute(ctx.sql.idempotency_delete, (scope, key))

    def take(self) -> list[tuple[Any, ...]]:
        staged, self._staged = self._staged, []
        return staged

    async def flush(self) -> None:
        """Write what no append took; a key taken meanwhile is `KeyInUse` (rolled back)."""
        staged = self.take()
        if not staged:
            return
        ctx = self._ctx
        try:
            await ctx.conn.executemany(ctx.sql.idempotency_insert, staged)
        except BaseException as exc:
            ctx.conn.failed = True
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc


class _LogReads(_Reads):
    async def read(self, tenant_id: str, after: int = 0, limit: int = 1000) -> list[Envelope]:
        return await _read_log(self._ctx, tenant_id, after, limit)

    async def read_stream(self, tenant_id: str, stream: str) -> list[Envelope]:
        ctx = self._ctx
        rows = await ctx.conn.fetch(ctx.sql.read_stream, (tenant_id, stream))
        return [_envelope(row, ctx.codec) for row in rows]

    async def stream_version(self, tenant_id: str, stream: str) -> int:
        ctx = self._ctx
        mine = ctx.tenant_id == tenant_id  # a write transaction of this tenant: under its lock
        if mine and stream in ctx.known_versions:
            return ctx.known_versions[stream]
        row = await ctx.conn.fetchrow(ctx.sql.stream_version, (tenant_id, stream))
        version = 0 if row is None or row[0] is None else int(row[0])
        if mine:
            ctx.known_versions[stream] = version
        return version

    async def head(self, tenant_id: str) -> int:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.head, (tenant_id,))
        return 0 if row is None else int(row[0])

    async def heads(self) -> dict[str, int]:
        ctx = self._ctx
        return {row[0]: int(row[1]) for row in await ctx.conn.fetch(ctx.sql.heads, ()) if row[1]}

    async def checkpoint(self, tenant_id: str) -> int:
        ctx = self._ctx
        row = await ctx.conn.fetchrow(ctx.sql.checkpoint, (tenant_id,))
        return 0 if row is None else int(row[0])
