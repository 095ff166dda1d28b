"""The SQL store's reads: values across the driver (times, id sets, NVRPP keys, for
asyncpg or sqlite3), what every statement of one transaction shares (`_Context`), rows
made domain values, and the read side of every table (with the Idempotency-Key records,
read and written under the transaction's lock). `adapters.sql.store` writes."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import msgspec

from adapters.sql import queries as q
from adapters.sql.drivers import (
    Connection,
    Row,
)
from adapters.sql.queries import NVRPP, Statements
from adapters.sql.tables import to_utc
from core.domain.digest import Digest
from core.domain.envelope import Envelope
from core.domain.idempotency import Answer, Record
from core.domain.model import (
    Completion,
    Event,
    Group,
    Nvrpp,
    Receiver,
    Tenant,
)
from core.ports import (
    CompletionFilter,
    EventFilter,
    GroupFilter,
    PageRequest,
    ReceiverFilter,
)

_encode = msgspec.json.Encoder().encode
_object = msgspec.json.Decoder(dict[str, Any]).decode
_ids = msgspec.json.Decoder(tuple[str, ...]).decode


def _json(value: object) -> str:
    return _encode(value).decode()


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
