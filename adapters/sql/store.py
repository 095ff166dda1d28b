"""The Store port over SQLite and PostgreSQL, on the drivers themselves (`drivers`).

Statements come compiled from one catalogue (`queries.Statements`), rows cross the
driver as tuples in the tables' column order, and values as the driver takes them
(`_PgCodec`, `_SqliteCodec`): no SQLAlchemy between a write and its database. This
module holds the store and its writes; `store_reads` the codecs and the read side,
`projection` what a write does to the tables.

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
    is read, unless the transaction read it already), then `projection.project` (the
    one projection, also used by replay) writes the log rows, the new head and the read
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
from datetime import datetime
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
from adapters.sql.projection import _Rows, _write_postgres, _write_sqlite, project
from adapters.sql.statistics import Statistics
from adapters.sql.store_reads import (
    Codec,
    _Context,
    _encode,
    _IdempotencyReads,
    _PgCodec,
    _read_log,
    _ReadTx,
    _SqliteCodec,
    _tenant_ids,
)
from core.domain.envelope import REGISTRY, Envelope
from core.domain.errors import Conflict, StreamVersionConflict
from core.domain.idempotency import Record, in_use
from core.domain.model import (
    DomainEvent,
    EventRecorded,
    TenantCreated,
    stream_of,
)
from core.ports import (
    AppendMeta,
    NewEntry,
)

__all__ = ["SqlStore"]


ANALYZE = "ANALYZE " + ", ".join(
    f'"{table.name}"' for table in (t.log, t.log_heads, *t.READ_MODELS)
)


# --- values across the driver --------------------------------------------------------------


#: Connections a PostgreSQL store keeps at most (its pool, no overflow).
DEFAULT_PG_CONNECTIONS = 10


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
