"""The one projection: what a write does to the tables, shared by every append and by
replay (`adapters.sql.rebuild`): the log rows, the head, the read models (events,
latest, groups, completions), the Idempotency-Key records and the checkpoint. On
PostgreSQL in one statement (a table's one row as values, its many rows as `unnest`ed
column arrays, or COPY from `COPY_AT_ROWS`), on SQLite one executemany per table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.sql import queries as q
from adapters.sql.store_reads import (
    Codec,
    _Context,
    _ids,
    _json,
)
from core.domain.model import (
    DomainEvent,
    EventRecorded,
    GroupCompleted,
    GroupCreated,
    GroupDeleted,
    GroupModified,
    ReceiverCreated,
    SubscriptionDisabled,
    SubscriptionPinged,
    TenantCreated,
    TenantModified,
)

__all__ = ["COPY_AT_ROWS", "project"]


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
