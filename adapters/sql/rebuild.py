"""Replay's bulk path: the log decoded for the projection, the rows written in bulk.

A rebuild applies a tenant's whole log through the one projection (`store.project`'s
`_Rows.add`, the code every append runs), so replay can never project differently from a
write. What it does differently is around that code, where a write of a few events and a
replay of millions have different costs:

Decoding (`decode`)
    An `EventRecorded` entry (nearly every entry of a log) is decoded with its payload
    left as the JSON text the log holds (`msgspec.Raw`): the projection writes a payload as
    the JSON text of the event's payload, which for a payload read from the log is that
    text itself, so there is nothing to parse and re-encode. (The log's text was written
    by the same encoder from the same payload, so it is the text an append would write.)
    Entries at an older schema version are upcast as always (`REGISTRY.decode_json`).

PostgreSQL: COPY, a pipeline and a merge (`Connection.copy`, `pipelined`)
    `events` and `completions` rows (insert-only) go in with binary COPY rather than an
    INSERT of unnested arrays (a third of the client's work); `latest`, the checkpoint
    and the rare tables take the append's own statements. The log is read and decoded a
    batch ahead: while the server inserts one batch, the next is decoded, so the client's
    work and the server's overlap instead of taking turns.
    The events are COPied into a temporary table keyed like `events` (a log with an event
    id twice fails there) and merged at the end: the tenant's rows that differ from the
    staged ones (or, after a whole log, have none) are deleted and the missing ones
    inserted. Deleting a tenant's events and inserting them again cost about 12 us a row
    in the server, nearly all of it keeping four indexes (and checking the key against
    the deleted rows); a replay usually finds its rows as they were, and the merge leaves
    those alone (about 4 us a row).

SQLite: the events' secondary indexes (`drop_indexes`, `create_indexes`)
    Deleting and re-inserting a tenant's events maintains four b-trees row by row. When
    the tenant holds most of the log, building the three secondary indexes once, after
    the rows are in, costs less: they are dropped and re-created inside the rebuild's
    transaction, from the very SQL text the database holds (so the schema after is the
    schema before; a rollback or a crash restores them with everything else). SQLite's
    readers keep reading their snapshot meanwhile, and its writers wait for the
    database's one writer lock anyway. PostgreSQL never does this: DROP INDEX would lock
    the table against every tenant's readers and writers until the commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from adapters.sql.drivers import Connection
from adapters.sql.queries import Query, Statements
from core.domain.envelope import REGISTRY
from core.domain.model import DomainEvent, Event, EventRecorded

__all__ = [
    "SHARE_TO_REBUILD_INDEXES",
    "YIELD_EVERY",
    "create_indexes",
    "decode",
    "drop_indexes",
    "pipelined",
    "rebuilds_indexes",
]


# --- decoding --------------------------------------------------------------------------------


class _RawPayloadEvent(Event, frozen=True, kw_only=True):
    """An `Event` whose payload is still the JSON text it was stored as."""

    payload: msgspec.Raw  # type: ignore[assignment]  # the same JSON, not parsed


class _RawPayloadEventRecorded(EventRecorded, frozen=True, kw_only=True):
    """`EventRecorded` as the projection sees it (it matches `EventRecorded(event=e)`)."""

    event: _RawPayloadEvent


_decoders: dict[tuple[str, int], msgspec.json.Decoder[Any] | None] = {}


def decode(type_name: str, schema_version: int, data: str | bytes) -> DomainEvent:
    """A log entry's domain event for the projection: `REGISTRY.decode_json`'s, except that
    an `EventRecorded` at the current version keeps its payload as JSON text."""
    key = (type_name, schema_version)
    try:
        decoder = _decoders[key]
    except KeyError:
        decoder = _decoders[key] = _raw_payload_decoder(type_name, schema_version)
    if decoder is None:
        return REGISTRY.decode_json(type_name, schema_version, data)
    event: DomainEvent = decoder.decode(data)
    return event


def _raw_payload_decoder(type_name: str, schema_version: int) -> msgspec.json.Decoder[Any] | None:
    """The decoder keeping the payload raw, for an `EventRecorded` entry at the current
    version of the registered class; None for the others."""
    if (
        type_name == EventRecorded.__struct_config__.tag
        and REGISTRY.event_class(type_name) is EventRecorded
        and REGISTRY.current_version(type_name) == schema_version
    ):
        return msgspec.json.Decoder(_RawPayloadEventRecorded)
    return None


# --- reading ahead ----------------------------------------------------------------------------

T = TypeVar("T")

YIELD_EVERY = 256
"""Entries a build decodes between two looks at the event loop (for the write in flight)."""


async def pipelined(
    fetch: Callable[[int], Awaitable[Sequence[Sequence[Any]]]],
    build: Callable[[Sequence[Sequence[Any]]], Awaitable[T]],
    write: Callable[[T, int], Coroutine[Any, Any, None]],
    *,
    after: int,
    batch: int,
    overlap: bool,
) -> AsyncIterator[int]:
    """Fetch, build and write a log in batches; yield each batch's number of entries once
    it is written.

    `fetch(after)` reads up to `batch` rows after a position (a row's first column is its
    position), `build(rows)` makes what `write(built, last position)` writes. All three
    use one connection, one at a time. With `overlap`, each batch is fetched before the
    write of the one before starts and built while that write runs (the server works on
    one batch while the client decodes the next: `build` must look at the event loop now
    and then for the write to go on); without, one after the other."""
    rows = await fetch(after)
    if not rows:
        return
    built = await build(rows)
    while rows:
        last = int(rows[-1][0])
        more = len(rows) == batch  # a shorter batch is the log's last
        if overlap:
            ahead = await fetch(last) if more else []
            async with _single_errors(), anyio.create_task_group() as tg:
                tg.start_soon(write, built, last)
                await anyio.lowlevel.checkpoint()  # the write goes out before the build
                if ahead:
                    built = await build(ahead)
            yield len(rows)
        else:
            await write(built, last)
            yield len(rows)
            ahead = await fetch(last) if more else []
            if ahead:
                built = await build(ahead)
        rows = ahead


@asynccontextmanager
async def _single_errors() -> AsyncIterator[None]:
    """A task group's lone exception raised as itself (callers know the driver's errors,
    not groups of them)."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


# --- SQLite: secondary indexes built once ------------------------------------------------------

SHARE_TO_REBUILD_INDEXES = 0.75
"""A SQLite rebuild of a tenant that has at least this share of the log's entries (or of
every tenant) builds the events' secondary indexes once at the end rather than row by row.
Below it, building them over the other tenants' rows too costs more than it saves: with
two tenants of equal size, about as much as keeping them (docs/explanation/performance.md)."""

INDEXED = "events"
"""The table whose secondary indexes a rebuild may build once (the other read models have
one row per tenant, receiver, group or artifact, not per entry)."""


def rebuilds_indexes(heads: dict[str, int], tenant_id: str | None) -> bool:
    """Whether a whole rebuild of `tenant_id` (None: of every tenant) builds the indexes
    once: `heads` are the tenants' log heads (their numbers of entries)."""
    total = sum(heads.values())
    if tenant_id is None or total == 0:
        return total > 0
    return heads.get(tenant_id, 0) >= SHARE_TO_REBUILD_INDEXES * total


async def drop_indexes(conn: Connection, sql: Statements) -> list[Query]:
    """Drop the secondary indexes of `INDEXED`, in the caller's transaction; return the
    statements that create them again, as SQLite holds them (`sqlite_master.sql`)."""
    found = await conn.fetch(sql.secondary_indexes, (INDEXED,))
    creates = []
    for name, create in found:
        await conn.execute(_ddl(f'DROP INDEX "{name}"', "drop_index"), ())
        creates.append(_ddl(create, "create_index"))
    return creates


async def create_indexes(conn: Connection, creates: Sequence[Query]) -> None:
    for create in creates:
        await conn.execute(create, ())


def _ddl(text: str, name: str) -> Query:
    query = Query(text, (), None)
    query.name = name
    return query
