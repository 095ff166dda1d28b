"""Replay's bulk path: the log decoded for the projection, the rows written in bulk.

A rebuild applies a tenant's whole log through the one projection (`projection.project`'s
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

Events: staged and merged (`Statements.stage_events`, `store._merge_events`)
    A tenant's events are written into a temporary table keyed like `events` (a log
    holding an event id twice fails there, as it would in `events`) and merged at the end:
    the tenant's rows that differ from the staged ones (after a whole log, also those that
    have none) are deleted, the missing ones inserted. Deleting a tenant's events and
    inserting them again kept four b-trees row by row (on PostgreSQL, also checking each
    key against the deleted rows): about 12 us a row in the server, more than decoding
    costs in the client. A replay mostly finds its rows as they were, and the merge leaves
    those alone (about 4 us a row). A replay that must write every row (a read model
    emptied) still keeps the indexes row by row, as an append does.

PostgreSQL: COPY and a pipeline (`Connection.copy`, `pipelined`)
    `events` and `completions` rows (insert-only) go in with binary COPY rather than an
    INSERT of unnested arrays (a third of the client's work); `latest`, the checkpoint
    and the rare tables take the append's own statements. The log is read and decoded a
    batch ahead: while the server inserts one batch, the next is decoded, so the client's
    work and the server's overlap instead of taking turns. (SQLite runs in the client's
    thread: there is nothing to overlap.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from core.domain.envelope import REGISTRY
from core.domain.model import DomainEvent, Event, EventRecorded

__all__ = ["YIELD_EVERY", "decode", "pipelined"]


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
