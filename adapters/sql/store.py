"""The Store port over SQLAlchemy Core (async) for SQLite and PostgreSQL.

Transactions
    `write(tenant_id)` takes the tenant's writer lock before anything else and
    holds it to commit. PostgreSQL: the tenant's `log_heads` row, locked with
    SELECT ... FOR UPDATE (created first if missing), in READ COMMITTED: the
    next writer reads the head only after this one committed, so positions
    commit in order and a reader tailing "position > p" never skips one
    (docs/explanation/log-positions.md). SQLite: `BEGIN IMMEDIATE`, the
    database's one writer lock. `read()` is one snapshot: REPEATABLE READ, READ
    ONLY on PostgreSQL; a read transaction in WAL mode on SQLite. Any exception
    in a block rolls the whole block back.

Append
    Checks the expected versions (a stream expected new is checked by the unique
    (tenant_id, stream, stream_version) index; a stream expected at version n > 0
    is read), then `project` (the one projection, also used by replay) writes the
    log rows, the new head and the read models: on PostgreSQL the hot tables in
    one statement of `unnest`ed column arrays, on SQLite one executemany per
    table. A batch of 1000 events costs a handful of round trips, not thousands.
    Unique violations become domain errors; on PostgreSQL they also abort the
    transaction, so a block that gets one from `append` must end (let it
    propagate).

Statistics
    See `SqlStore._refresh_statistics`: a young PostgreSQL database gets a few
    early ANALYZEs so that cached plans do not keep their empty-table choices.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import tables as t
from adapters.sql.engine import SQLITE_BEGIN_OPTION, create_engine
from adapters.sql.queries import BATCH_PARTS, NVRPP, Statements
from adapters.sql.tables import to_utc as _utc
from core.domain.digest import Digest
from core.domain.envelope import REGISTRY, Envelope
from core.domain.errors import Conflict, StreamVersionConflict
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

_encoder = msgspec.json.Encoder()
_object = msgspec.json.Decoder(dict[str, Any])
_ids = msgspec.json.Decoder(tuple[str, ...])

Row = sa.Row[Any]

ANALYZE_AFTER = (1_000, 10_000, 100_000, 1_000_000)
"""Numbers of appended entries after which a PostgreSQL store refreshes the statistics."""
ANALYZE = sa.text("ANALYZE " + ", ".join(f'"{table.name}"' for table in t.metadata.sorted_tables))


def _json(value: object) -> str:
    return _encoder.encode(value).decode()


class SqlStore:
    """Store port over an async SQLAlchemy engine (PostgreSQL via asyncpg, SQLite via aiosqlite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sql = Statements(engine.dialect.name)
        self._appended = 0  # log entries this store committed (for `_refresh_statistics`)
        self._analyze_at = iter(ANALYZE_AFTER if self._sql.postgres else ())
        self._next_analyze = next(self._analyze_at, None)

    @classmethod
    async def connect(cls, url: str, **engine_options: Any) -> SqlStore:
        """A store over the database at `url` (postgresql://..., sqlite:///path; async drivers).

        The schema must be migrated already (`adapters.sql.migrations.migrate`).
        `engine_options` go to SQLAlchemy's `create_async_engine` (pool size ...).
        """
        engine = create_engine(url, **engine_options)
        try:
            async with engine.connect():
                pass  # fail here, not at the first request, when the database is unreachable
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_ReadTx]:
        async with self._engine.connect() as conn:
            if self._sql.postgres:
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            async with conn.begin():
                yield _ReadTx(conn, self._sql)

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[_WriteTx]:
        async with self._engine.connect() as conn:
            if not self._sql.postgres:
                await conn.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
            async with conn.begin():
                head = await _lock_head(conn, self._sql, tenant_id)
                tx = _WriteTx(conn, self._sql, tenant_id, head)
                yield tx
            if self._next_analyze is not None:
                await self._refresh_statistics(conn, tx.appended)

    async def _refresh_statistics(self, conn: AsyncConnection, appended: int) -> None:
        """ANALYZE the tables when this store's appends cross 1k, 10k, 100k, 1M entries.

        PostgreSQL plans a prepared statement once it has run a few times and keeps that
        plan until the table's statistics change. On a young database, plans are made
        while the tables hold a handful of rows and without statistics, and one of them
        can read a tenant's every event for each lookup once there are thousands (seen:
        80 ms instead of 0.1 ms per append at 30k events). Autovacuum's ANALYZE fixes it,
        but on its own schedule (a minute or more); a few early ANALYZEs fix it at once.
        Statistics are an optimization: a refusal (say, not the tables' owner) is ignored.
        """
        self._appended += appended
        if self._next_analyze is None or self._appended < self._next_analyze:
            return
        while self._next_analyze is not None and self._appended >= self._next_analyze:
            self._next_analyze = next(self._analyze_at, None)
        try:
            async with conn.begin():
                await conn.execute(ANALYZE)
        except sa.exc.DBAPIError:
            pass

    @asynccontextmanager
    async def rebuild(self) -> AsyncIterator[_Rebuild]:
        async with self._engine.connect() as conn:
            if not self._sql.postgres:
                await conn.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
            async with conn.begin():
                if self._sql.postgres:
                    # Every writer's first statement locks a head row or inserts one: an
                    # EXCLUSIVE table lock waits for the writers in flight and holds back new
                    # ones until the rebuild commits, while readers go on reading the old
                    # read models (DELETE, not TRUNCATE, which would block them too).
                    await conn.execute(sa.text("LOCK TABLE log_heads IN EXCLUSIVE MODE"))
                for table in t.READ_MODELS:
                    await conn.execute(sa.delete(table))
                yield _Rebuild(conn, self._sql)

    async def close(self) -> None:
        await self._engine.dispose()


async def _lock_head(conn: AsyncConnection, sql: Statements, tenant_id: str) -> int:
    """Take the tenant's writer lock (PostgreSQL: its head row) and answer its last position."""
    params = {"tenant_id": tenant_id}
    position = (await conn.execute(sql.lock_head, params)).scalar_one_or_none()
    if position is None:  # the tenant's first write: make its head row, then lock it
        await conn.execute(sql.create_head, {"tenant_id": tenant_id, "position": 0})
        position = (await conn.execute(sql.lock_head, params)).scalar_one()
    return int(position)


# --- the projection: one function for append and replay ------------------------------------


async def project(
    conn: AsyncConnection,
    sql: Statements,
    tenant_id: str,
    applied: Sequence[tuple[int, DomainEvent]],
    log: LogBatch | None = None,
) -> None:
    """Apply domain events (with their log positions, in log order) to the read models.

    The one projection, for append and for replay. Rows are gathered per table
    and written together: PostgreSQL takes the hot tables (and `log`, the
    append's log rows and new head, if given) in one statement, SQLite one
    executemany per table. Where a later event of the batch overwrites an
    earlier one (a tenant or group changed twice, the latest event of a
    receiver for an artifact), only the last state is written, which is what
    applying them one by one would leave.
    """
    if not applied:
        return
    rows = _Rows(tenant_id)
    for _, event in applied:
        rows.add(event)
    checkpoint = applied[-1][0]
    if sql.postgres:
        await _write_postgres(conn, sql, rows, checkpoint, log)
    else:
        await _write_sqlite(conn, sql, rows, checkpoint, log)
    await rows.write_rare(conn, sql)


class LogBatch(msgspec.Struct, frozen=True):
    """The log rows an append writes with its projection, and the tenant's head after them."""

    rows: list[dict[str, Any]]
    head: int


async def _write_postgres(
    conn: AsyncConnection, sql: Statements, rows: _Rows, checkpoint: int, log: LogBatch | None
) -> None:
    """The log rows, head, events, latest rows, completions and checkpoint: one statement."""
    assert sql.write_batch is not None
    by_table = {
        "log": [] if log is None else log.rows,
        "event": rows.events,
        "latest": list(rows.latest.values()),
        "completion": rows.completions,
    }
    params: dict[str, Any] = {
        "tenant_id": rows.tenant_id,
        "head": None if log is None else log.head,
        "checkpoint": checkpoint,
    }
    for prefix, columns in BATCH_PARTS:
        table_rows = by_table[prefix]
        for name, _ in columns:
            params[f"{prefix}_{name}"] = [row[name] for row in table_rows]
    await conn.execute(sql.write_batch, params)


async def _write_sqlite(
    conn: AsyncConnection, sql: Statements, rows: _Rows, checkpoint: int, log: LogBatch | None
) -> None:
    """One executemany per table, then the head and the checkpoint."""
    for statement, table_rows in (
        (sql.insert_log, [] if log is None else log.rows),
        (sql.insert_event, rows.events),
        (sql.upsert_latest, list(rows.latest.values())),
        (sql.insert_completion, rows.completions),
    ):
        if table_rows:
            await conn.execute(statement, table_rows)
    if log is not None:
        await conn.execute(sql.set_head, {"head_tenant_id": rows.tenant_id, "head": log.head})
    await conn.execute(sql.set_checkpoint, {"tenant_id": rows.tenant_id, "position": checkpoint})


class _Rows:
    """The read-model rows a batch of domain events makes, gathered per table."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.tenants: dict[str, dict[str, Any]] = {}
        self.receivers: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.latest: dict[tuple[str, ...], dict[str, Any]] = {}
        self.groups: dict[tuple[str, str], dict[str, Any] | None] = {}  # None: deleted
        self.completions: list[dict[str, Any]] = []

    def add(self, event: DomainEvent) -> None:
        match event:
            case TenantCreated(tenant=x) | TenantModified(tenant=x):
                self.tenants[x.id] = _tenant_row(x)
            case ReceiverCreated(receiver=r):
                self.receivers.append(_receiver_row(r))
            case EventRecorded(event=e):
                self.events.append(_event_row(e))
                key = (e.event_receiver_id, e.name, e.version, e.release, e.platform_id, e.package)
                self.latest[key] = {
                    "tenant_id": self.tenant_id,
                    "receiver_id": e.event_receiver_id,
                    **{name: getattr(e, name) for name in NVRPP},
                    "event_id": e.id,
                }
            case GroupCreated(group=g) | GroupModified(group=g):
                self.groups[(g.tenant_id, g.id)] = _group_row(g)
            case GroupDeleted(group=g):
                self.groups[(g.tenant_id, g.id)] = None
            case GroupCompleted(completion=c):
                self.completions.append(_completion_row(c))
            case _:  # pragma: no cover - the registry knows every type
                raise TypeError(f"no projection for {event!r}")

    async def write_rare(self, conn: AsyncConnection, sql: Statements) -> None:
        """Tenants, receivers and groups: rare changes, one statement each."""
        if self.tenants:
            await conn.execute(sql.upsert_tenant, list(self.tenants.values()))
        if self.receivers:
            await conn.execute(sql.insert_receiver, self.receivers)
        if self.groups:
            await _project_groups(conn, sql, self.groups)


async def _project_groups(
    conn: AsyncConnection, sql: Statements, rows: dict[tuple[str, str], dict[str, Any] | None]
) -> None:
    """Groups changed by the batch: their final state replaces them and their member rows."""
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, group_id in rows:
        by_tenant.setdefault(tenant_id, []).append(group_id)
    for tenant_id, group_ids in by_tenant.items():
        params = {"tenant_id": tenant_id, "group_ids": group_ids}
        await conn.execute(sql.delete_members, params)
        gone = [g for g in group_ids if rows[(tenant_id, g)] is None]
        if gone:
            await conn.execute(sql.delete_groups, {"tenant_id": tenant_id, "group_ids": gone})
    present = [row for row in rows.values() if row is not None]
    if present:
        await conn.execute(sql.upsert_group, present)
        members = [
            {"tenant_id": row["tenant_id"], "receiver_id": receiver_id, "group_id": row["id"]}
            for row in present
            for receiver_id in _ids.decode(row["event_receiver_ids"])
        ]
        if members:
            await conn.execute(sql.insert_member, members)


def _tenant_row(x: Tenant) -> dict[str, Any]:
    return {
        "id": x.id,
        "slug": x.slug,
        "name": x.name,
        "disabled": x.disabled,
        "created_at": _utc(x.created_at),
        "updated_at": _utc(x.updated_at),
    }


def _receiver_row(r: Receiver) -> dict[str, Any]:
    return {
        "tenant_id": r.tenant_id,
        "id": r.id,
        "name": r.name,
        "type": r.type,
        "version": r.version,
        "description": r.description,
        "schema": _json(r.schema),
        "fingerprint": r.fingerprint,
        "created_at": _utc(r.created_at),
    }


def _event_row(e: Event) -> dict[str, Any]:
    return {
        "tenant_id": e.tenant_id,
        "id": e.id,
        "name": e.name,
        "version": e.version,
        "release": e.release,
        "platform_id": e.platform_id,
        "package": e.package,
        "description": e.description,
        "payload": _json(e.payload),
        "success": e.success,
        "event_receiver_id": e.event_receiver_id,
        "created_at": _utc(e.created_at),
    }


def _group_row(g: Group) -> dict[str, Any]:
    return {
        "tenant_id": g.tenant_id,
        "id": g.id,
        "name": g.name,
        "type": g.type,
        "version": g.version,
        "description": g.description,
        "enabled": g.enabled,
        "event_receiver_ids": _json(g.event_receiver_ids),
        "created_at": _utc(g.created_at),
        "updated_at": _utc(g.updated_at),
    }


def _completion_row(c: Completion) -> dict[str, Any]:
    return {
        "tenant_id": c.tenant_id,
        "id": c.id,
        "group_id": c.group_id,
        "name": c.name,
        "version": c.version,
        "release": c.release,
        "platform_id": c.platform_id,
        "package": c.package,
        "triggering_event_id": c.triggering_event_id,
        "member_event_ids": _json(c.member_event_ids),
        "completed_at": _utc(c.completed_at),
    }


# --- rows back into values -----------------------------------------------------------------


def _tenant(row: Row) -> Tenant:
    return Tenant(
        id=row.id,
        slug=row.slug,
        name=row.name,
        disabled=row.disabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _receiver(row: Row) -> Receiver:
    return Receiver(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        type=row.type,
        version=row.version,
        description=row.description,
        schema=_object.decode(row.schema),
        fingerprint=row.fingerprint,
        created_at=row.created_at,
    )


def _event(row: Row) -> Event:
    return Event(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        version=row.version,
        release=row.release,
        platform_id=row.platform_id,
        package=row.package,
        description=row.description,
        payload=_object.decode(row.payload),
        success=row.success,
        event_receiver_id=row.event_receiver_id,
        created_at=row.created_at,
    )


def _group(row: Row) -> Group:
    return Group(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        type=row.type,
        version=row.version,
        description=row.description,
        enabled=row.enabled,
        event_receiver_ids=_ids.decode(row.event_receiver_ids),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _completion(row: Row) -> Completion:
    return Completion(
        id=row.id,
        tenant_id=row.tenant_id,
        group_id=row.group_id,
        name=row.name,
        version=row.version,
        release=row.release,
        platform_id=row.platform_id,
        package=row.package,
        triggering_event_id=row.triggering_event_id,
        member_event_ids=_ids.decode(row.member_event_ids),
        completed_at=row.completed_at,
    )


def _envelope(row: Row) -> Envelope:
    return Envelope(
        id=row.id,
        type=row.type,
        schema_version=row.schema_version,
        tenant_id=row.tenant_id,
        stream=row.stream,
        stream_version=row.stream_version,
        position=row.position,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        actor=row.actor,
        occurred_at=row.occurred_at,
        data=_object.decode(row.data),
    )


# --- transactions --------------------------------------------------------------------------


class _ReadTx:
    def __init__(self, conn: AsyncConnection, sql: Statements) -> None:
        self._conn = conn
        self._sql = sql
        self.tenants = _TenantReads(conn, sql)
        self.receivers = _ReceiverReads(conn, sql)
        self.events = _EventReads(conn, sql)
        self.groups = _GroupReads(conn, sql)
        self.latest = _LatestReads(conn, sql)
        self.completions = _CompletionReads(conn, sql)
        self.log = _LogReads(conn, sql)

    async def tenant_ids(self) -> list[str]:
        return await _tenant_ids(self._conn, self._sql)

    async def digest(self) -> str:
        """The memory store's digest: same sections, rows in the same order, same values."""
        conn, sql = self._conn, self._sql
        digest = Digest()
        for name, table, convert in (
            ("tenants", t.tenants, _tenant),
            ("receivers", t.receivers, _receiver),
            ("events", t.events, _event),
            ("groups", t.groups, _group),
        ):
            rows = await conn.stream(sa.select(table).order_by(sql.by_id(table.c.id)))
            digest.section(name, [convert(row) async for row in rows])
        lt = t.latest
        rows = await conn.stream(
            sa.select(lt).order_by(*(sql.by_id(lt.c[c]) for c in ("tenant_id", "receiver_id")))
        )
        latest = [
            (
                row.tenant_id,
                row.receiver_id,
                {name: getattr(row, name) for name in NVRPP},
                row.event_id,
            )
            async for row in rows
        ]
        # Python's order for the NVRPP part (the memory store sorts the same tuples).
        latest.sort(key=lambda r: (r[0], r[1], *(r[2][name] for name in NVRPP)))
        digest.section("latest", latest)
        rows = await conn.stream(sa.select(t.completions).order_by(sql.by_id(t.completions.c.id)))
        digest.section("completions", [_completion(row) async for row in rows])
        cp = t.checkpoints
        rows = await conn.stream(
            sa.select(cp.c.tenant_id, cp.c.position).order_by(sql.by_id(cp.c.tenant_id))
        )
        digest.section("checkpoints", [(row.tenant_id, row.position) async for row in rows])
        return digest.hexdigest()


class _WriteTx(_ReadTx):
    def __init__(self, conn: AsyncConnection, sql: Statements, tenant_id: str, head: int) -> None:
        super().__init__(conn, sql)
        self.tenant_id = tenant_id
        self._head = head
        self._versions: dict[str, int] = {}  # streams this transaction appended to
        self.appended = 0

    async def append(self, entries: Sequence[NewEntry], meta: AppendMeta) -> list[Envelope]:
        if not entries:
            return []
        conn, sql, tenant_id = self._conn, self._sql, self.tenant_id
        streams = [stream_of(entry.event) for entry in entries]
        versions = dict(self._versions)
        to_read = {
            stream
            for stream, entry in zip(streams, entries, strict=True)
            if entry.expected_version > 0 and stream not in versions
        }
        stored = await self._stream_versions(to_read) if to_read else {}
        unverified: list[str] = []  # streams taken as new: the unique index checks them
        made: list[Envelope] = []
        rows: list[dict[str, Any]] = []
        position = self._head
        for stream, entry in zip(streams, entries, strict=True):
            if stream in versions:
                current = versions[stream]
            elif entry.expected_version > 0:
                current = stored.get(stream, 0)
            else:
                current = 0
                unverified.append(stream)
            if entry.expected_version != current:
                raise StreamVersionConflict(
                    f"Stream {stream} is at version {current}, not {entry.expected_version}."
                )
            versions[stream] = current + 1
            position += 1
            type_name, schema_version, data = REGISTRY.encode(entry.event)
            made.append(
                Envelope(
                    id=entry.id,
                    type=type_name,
                    schema_version=schema_version,
                    tenant_id=tenant_id,
                    stream=stream,
                    stream_version=current + 1,
                    position=position,
                    correlation_id=meta.correlation_id,
                    causation_id=meta.causation_id,
                    actor=meta.actor,
                    occurred_at=entry.occurred_at,
                    data=data,
                )
            )
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "position": position,
                    "id": entry.id,
                    "stream": stream,
                    "stream_version": current + 1,
                    "type": type_name,
                    "schema_version": schema_version,
                    "correlation_id": meta.correlation_id,
                    "causation_id": meta.causation_id,
                    "actor": meta.actor,
                    "occurred_at": _utc(entry.occurred_at),
                    "data": _json(data),
                }
            )
        try:
            await project(
                conn,
                sql,
                tenant_id,
                [(e.position, entry.event) for e, entry in zip(made, entries, strict=True)],
                LogBatch(rows, position),
            )
        except IntegrityError as exc:
            raise _refusal(exc, entries, unverified) from exc
        self._head = position
        self._versions = versions
        self.appended += len(made)
        return made

    async def _stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        result = await self._conn.execute(
            self._sql.stream_versions, {"tenant_id": self.tenant_id, "streams": list(streams)}
        )
        return {stream: int(version) for stream, version in result}


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w.]+(?:, [\w.]+)*)")


def _violated(exc: IntegrityError) -> str | None:
    """The name of the unique constraint an IntegrityError reports, on either backend."""
    cause = getattr(exc.orig, "__cause__", None)  # asyncpg's exception, under SQLAlchemy's
    name = getattr(cause, "constraint_name", None)
    if isinstance(name, str):
        return name
    found = _SQLITE_UNIQUE.search(str(exc.orig))
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


def _refusal(exc: IntegrityError, entries: Sequence[NewEntry], unverified: list[str]) -> Exception:
    """The domain error for a unique violation, as the memory store words it; else `exc`."""
    match _violated(exc):
        case "uq_log_stream_version":
            if len(unverified) == 1:
                return StreamVersionConflict(
                    f"Stream {unverified[0]} exists already: it is not at version 0."
                )
            return StreamVersionConflict("A stream this append expected to be new exists already.")
        case "uq_tenants_slug":
            slugs = [e.event.tenant.slug for e in entries if isinstance(e.event, TenantCreated)]
            if len(slugs) == 1:
                return Conflict(f"A tenant with slug {slugs[0]!r} exists already.")
            return Conflict("A tenant with this slug exists already.")
        case "uq_receivers_triple":
            return Conflict("An event receiver with this name, type and version exists already.")
        case _:
            return exc


class _Rebuild:
    def __init__(self, conn: AsyncConnection, sql: Statements) -> None:
        self._conn = conn
        self._sql = sql

    async def tenant_ids(self) -> list[str]:
        return await _tenant_ids(self._conn, self._sql)

    async def log(self, tenant_id: str, batch: int = 1000) -> AsyncIterator[list[Envelope]]:
        after = 0
        while True:
            entries = await _read_log(self._conn, self._sql, tenant_id, after, batch)
            if not entries:
                return
            yield entries
            if len(entries) < batch:
                return
            after = entries[-1].position

    async def apply(self, tenant_id: str, envelopes: Sequence[Envelope]) -> None:
        await project(
            self._conn,
            self._sql,
            tenant_id,
            [(e.position, REGISTRY.decode_envelope(e)) for e in envelopes],
        )


async def _tenant_ids(conn: AsyncConnection, sql: Statements) -> list[str]:
    """Every tenant that has a log (a committed write), in Python's order."""
    return sorted((await conn.execute(sql.tenant_ids)).scalars())


async def _read_log(
    conn: AsyncConnection, sql: Statements, tenant_id: str, after: int, limit: int
) -> list[Envelope]:
    result = await conn.execute(
        sql.read_log, {"tenant_id": tenant_id, "after": after, "limit": limit}
    )
    return [_envelope(row) for row in result]


# --- reads ---------------------------------------------------------------------------------


class _Reads:
    def __init__(self, conn: AsyncConnection, sql: Statements) -> None:
        self._conn = conn
        self._sql = sql

    async def _rows(self, stmt: sa.Executable, params: dict[str, Any] | None = None) -> list[Row]:
        return list(await self._conn.execute(stmt, params))

    async def _row(self, stmt: sa.Executable, params: dict[str, Any]) -> Row | None:
        return (await self._conn.execute(stmt, params)).first()


class _TenantReads(_Reads):
    async def get(self, tenant_id: str) -> Tenant | None:
        row = await self._row(self._sql.tenant_by_id, {"id": tenant_id})
        return None if row is None else _tenant(row)

    async def by_slug(self, slug: str) -> Tenant | None:
        row = await self._row(self._sql.tenant_by_slug, {"slug": slug})
        return None if row is None else _tenant(row)

    async def list(self, page: PageRequest) -> list[Tenant]:
        return [_tenant(row) for row in await self._rows(self._sql.tenants_page(page))]


class _ReceiverReads(_Reads):
    async def get(self, tenant_id: str, receiver_id: str) -> Receiver | None:
        row = await self._row(self._sql.receiver_by_id, {"tenant_id": tenant_id, "id": receiver_id})
        return None if row is None else _receiver(row)

    async def by_triple(
        self, tenant_id: str, name: str, type_: str, version: str
    ) -> Receiver | None:
        row = await self._row(
            self._sql.receiver_by_triple,
            {"tenant_id": tenant_id, "name": name, "type": type_, "version": version},
        )
        return None if row is None else _receiver(row)

    async def get_many(self, tenant_id: str, receiver_ids: Collection[str]) -> dict[str, Receiver]:
        if not receiver_ids:
            return {}
        rows = await self._rows(
            self._sql.receivers_by_ids, {"tenant_id": tenant_id, "ids": list(set(receiver_ids))}
        )
        found = {row.id: _receiver(row) for row in rows}
        return {i: found[i] for i in receiver_ids if i in found}

    async def list(
        self, tenant_id: str, where: ReceiverFilter, page: PageRequest
    ) -> list[Receiver]:
        rows = await self._rows(self._sql.receivers_page(tenant_id, where, page))
        return [_receiver(row) for row in rows]


class _EventReads(_Reads):
    async def get(self, tenant_id: str, event_id: str) -> Event | None:
        row = await self._row(self._sql.event_by_id, {"tenant_id": tenant_id, "id": event_id})
        return None if row is None else _event(row)

    async def list(self, tenant_id: str, where: EventFilter, page: PageRequest) -> list[Event]:
        rows = await self._rows(self._sql.events_page(tenant_id, where, page))
        return [_event(row) for row in rows]


class _GroupReads(_Reads):
    async def get(self, tenant_id: str, group_id: str) -> Group | None:
        row = await self._row(self._sql.group_by_id, {"tenant_id": tenant_id, "id": group_id})
        return None if row is None else _group(row)

    async def containing(self, tenant_id: str, receiver_ids: Collection[str]) -> list[Group]:
        if not receiver_ids:
            return []
        rows = await self._rows(
            self._sql.groups_containing,
            {"tenant_id": tenant_id, "receiver_ids": list(receiver_ids)},
        )
        return sorted((_group(row) for row in rows), key=lambda g: g.id)

    async def list(self, tenant_id: str, where: GroupFilter, page: PageRequest) -> list[Group]:
        rows = await self._rows(self._sql.groups_page(tenant_id, where, page))
        return [_group(row) for row in rows]


class _LatestReads(_Reads):
    async def get_many(
        self, tenant_id: str, receiver_ids: Collection[str], keys: Collection[Nvrpp]
    ) -> dict[tuple[str, Nvrpp], Event]:
        if not receiver_ids or not keys:
            return {}
        wanted = {(k.name, k.version, k.release, k.platform_id, k.package) for k in keys}
        rows = await self._rows(
            self._sql.latest_events,
            {"tenant_id": tenant_id, "receiver_ids": list(set(receiver_ids)), "keys": list(wanted)},
        )
        found = {}
        for row in rows:
            event = _event(row)
            found[(event.event_receiver_id, event.key)] = event
        return found


class _CompletionReads(_Reads):
    async def list(
        self, tenant_id: str, group_id: str, where: CompletionFilter, page: PageRequest
    ) -> list[Completion]:
        rows = await self._rows(self._sql.completions_page(tenant_id, group_id, where, page))
        return [_completion(row) for row in rows]


class _LogReads(_Reads):
    async def read(self, tenant_id: str, after: int = 0, limit: int = 1000) -> list[Envelope]:
        return await _read_log(self._conn, self._sql, tenant_id, after, limit)

    async def read_stream(self, tenant_id: str, stream: str) -> list[Envelope]:
        rows = await self._rows(self._sql.read_stream, {"tenant_id": tenant_id, "stream": stream})
        return [_envelope(row) for row in rows]

    async def stream_version(self, tenant_id: str, stream: str) -> int:
        result = await self._conn.execute(
            self._sql.stream_versions, {"tenant_id": tenant_id, "streams": [stream]}
        )
        return {s: int(v) for s, v in result}.get(stream, 0)

    async def head(self, tenant_id: str) -> int:
        position = (
            await self._conn.execute(self._sql.head, {"tenant_id": tenant_id})
        ).scalar_one_or_none()
        return 0 if position is None else int(position)

    async def checkpoint(self, tenant_id: str) -> int:
        position = (
            await self._conn.execute(self._sql.checkpoint, {"tenant_id": tenant_id})
        ).scalar_one_or_none()
        return 0 if position is None else int(position)
