"""The subscriptions half of the delivery store (`SqlSubscriptions`, the store's
`.subscriptions`), and the rows of subscriptions, secrets, deliveries and attempts read
back into the domain's values: shared by both halves (adapters/sql/delivery.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from adapters.sql.drivers import Row
from adapters.sql.store_reads import Codec
from core.domain.delivery import Attempt, Delivery, DeliveryStatus
from core.domain.errors import Conflict
from core.domain.idempotency import Record
from core.domain.rotation import SecretVersion, VersionState
from core.domain.subscriptions import Subscription, SubscriptionFilter, secret_name
from core.ports import PageRequest, SecretRecord

if TYPE_CHECKING:
    from adapters.sql.delivery import SqlDeliveries

__all__ = ["SqlSubscriptions", "attempt_of", "delivery_of", "subscription_of"]

_UNIQUE = (asyncpg.UniqueViolationError, sqlite3.IntegrityError)
_encode = msgspec.json.Encoder().encode
_filter = msgspec.json.Decoder(SubscriptionFilter).decode


class SqlSubscriptions:
    def __init__(self, store: SqlDeliveries) -> None:
        self._store = store

    async def add(
        self, subscription: Subscription, secret: SecretRecord, record: Record | None = None
    ) -> Subscription:
        store = self._store
        sql, codec = store.sql, store.codec
        async with store.write() as conn:
            await store.keep(conn, record)
            await conn.execute(
                sql.create_checkpoint, (subscription.tenant_id, subscription.start_position)
            )
            row = await conn.fetchrow(sql.lock_checkpoint, (subscription.tenant_id,))
            assert row is not None  # made just above, never deleted
            stored = msgspec.structs.replace(
                subscription, start_position=max(subscription.start_position, int(row[0]))
            )
            try:
                await conn.execute(sql.insert_subscription, _subscription_row(stored, codec))
                await conn.execute(
                    sql.insert_secret, _secret_row(stored.tenant_id, stored.id, secret, codec)
                )
            except _UNIQUE as exc:
                conn.failed = True
                raise Conflict(f"Subscription {stored.id} exists already.") from exc
        return stored

    async def get(self, tenant_id: str, subscription_id: str) -> Subscription | None:
        store = self._store
        async with store.read() as conn:
            row = await conn.fetchrow(store.sql.subscription, (tenant_id, subscription_id))
        return None if row is None else subscription_of(row, store.codec)

    async def update(self, before: Subscription, after: Subscription) -> bool:
        store = self._store
        time = store.codec.time
        async with store.write() as conn:
            row = await conn.fetchrow(
                store.sql.update_subscription,
                (before.tenant_id, before.id, time(before.updated_at), after.name, after.url,
                 after.description, after.enabled, _encode(after.filter).decode(),
                 after.ordering, after.disabled_reason,
                 None if after.failing_since is None else time(after.failing_since),
                 time(after.updated_at)),
            )  # fmt: skip
            woken = row is not None and after.enabled and not before.enabled
            if woken:
                await store.notify(conn)
        if woken:
            store.rang()
        return row is not None

    async def delete(self, tenant_id: str, subscription_id: str) -> bool:
        store = self._store
        sql = store.sql
        async with store.write() as conn:
            row = await conn.fetchrow(sql.delete_subscription, (tenant_id, subscription_id))
            if row is None:
                return False
            for statement in (
                sql.delete_attempts_of,
                sql.delete_deliveries_of,
                sql.delete_secrets_of,
            ):
                await conn.execute(statement, (tenant_id, subscription_id))
        return True

    async def secrets(self, tenant_id: str, subscription_id: str) -> list[SecretRecord]:
        store = self._store
        async with store.read() as conn:
            rows = await conn.fetch(store.sql.secrets, (tenant_id, subscription_id))
        return [_secret(row, store.codec) for row in rows]

    async def save_secrets(
        self,
        tenant_id: str,
        subscription_id: str,
        before: Sequence[SecretVersion],
        after: Sequence[SecretRecord],
        record: Record | None = None,
    ) -> None:
        store = self._store
        sql, codec = store.sql, store.codec
        time = codec.time

        def at(moment: datetime | None) -> Any:
            return None if moment is None else time(moment)

        planned = {v.version: v for v in before}
        async with store.write() as conn:
            await store.keep(conn, record)
            for secret in after:
                v = secret.version
                old = planned.get(v.version)
                if old is None:
                    try:
                        await conn.execute(
                            sql.insert_secret,
                            _secret_row(tenant_id, subscription_id, secret, codec),
                        )
                    except _UNIQUE as exc:
                        conn.failed = True
                        raise Conflict("The secret was changed by another writer.") from exc
                    continue
                if old == v:
                    continue
                row = await conn.fetchrow(
                    sql.update_secret,
                    (tenant_id, subscription_id, v.version, str(old.state), str(v.state),
                     at(v.activated_at), at(v.demoted_at), at(v.verify_until),
                     at(v.retired_at)),
                )  # fmt: skip
                if row is None:
                    conn.failed = True
                    raise Conflict("The secret was changed by another writer.")

    async def unannounced(self) -> list[Subscription]:
        store = self._store
        async with store.read() as conn:
            rows = await conn.fetch(store.sql.unannounced, ())
        return [subscription_of(row, store.codec) for row in rows]

    async def announce(self, tenant_id: str, subscription_id: str, announced: int) -> None:
        store = self._store
        async with store.write() as conn:
            await conn.execute(store.sql.announce, (tenant_id, subscription_id, announced))

    async def list(self, tenant_id: str, page: PageRequest) -> list[Subscription]:
        store = self._store
        query = store.sql.subscriptions_page(order=page.order, after=page.after is not None)
        args: list[Any] = [tenant_id]
        if page.after is not None:
            args.append(page.after)
        args.append(page.limit)
        async with store.read() as conn:
            rows = await conn.fetch(query, args)
        return [subscription_of(row, store.codec) for row in rows]


# --- rows <-> values ---------------------------------------------------------------------------


def _subscription_row(s: Subscription, codec: Codec) -> tuple[Any, ...]:
    time = codec.time
    return (
        s.tenant_id, s.id, s.name, s.url, s.description, s.enabled,
        _encode(s.filter).decode(), s.ordering, time(s.created_at), time(s.updated_at),
        s.disabled_reason, s.start_position,
        None if s.failing_since is None else time(s.failing_since), s.disables, s.announced,
    )  # fmt: skip


def subscription_of(row: Row, codec: Codec) -> Subscription:
    at = codec.from_time
    return Subscription(
        tenant_id=row[0],
        id=row[1],
        name=row[2],
        url=row[3],
        description=row[4],
        enabled=bool(row[5]),
        filter=_filter(row[6]),
        ordering=row[7],
        created_at=at(row[8]),
        updated_at=at(row[9]),
        disabled_reason=row[10],
        start_position=int(row[11]),
        failing_since=None if row[12] is None else at(row[12]),
        disables=int(row[13]),
        announced=int(row[14]),
    )


def delivery_of(row: Row, codec: Codec) -> Delivery:
    at = codec.from_time

    def maybe(value: Any) -> datetime | None:
        return None if value is None else at(value)

    return Delivery(
        id=row[0],
        tenant_id=row[1],
        subscription_id=row[2],
        message_id=row[3],
        message_type=row[4],
        position=int(row[5]),
        ordering_key=row[6],
        status=DeliveryStatus(row[7]),
        attempts=int(row[8]),
        round_attempts=int(row[9]),
        next_attempt_at=maybe(row[10]),
        last_attempt_at=maybe(row[11]),
        last_status_code=row[12],
        last_error=row[13],
        message_time=at(row[14]),
        created_at=at(row[15]),
        claimed_by=row[16],
        lease_until=maybe(row[17]),
        correlation_id=row[18],
        causation_id=row[19],
    )


def attempt_of(row: Row, codec: Codec) -> Attempt:
    return Attempt(
        delivery_id=row[0],
        number=int(row[1]),
        started_at=codec.from_time(row[3]),
        duration_ms=float(row[4]),
        status_code=row[5],
        error=row[6],
        response_excerpt=row[7],
    )


def _secret_row(
    tenant_id: str, subscription_id: str, record: SecretRecord, codec: Codec
) -> tuple[Any, ...]:
    time = codec.time
    v = record.version

    def at(moment: datetime | None) -> Any:
        return None if moment is None else time(moment)

    return (
        tenant_id, subscription_id, v.version, str(v.state), time(v.created_at),
        at(v.activated_at), at(v.demoted_at), at(v.verify_until), at(v.retired_at),
        record.envelope,
    )  # fmt: skip


def _secret(row: Row, codec: Codec) -> SecretRecord:
    at = codec.from_time

    def maybe(value: Any) -> datetime | None:
        return None if value is None else at(value)

    return SecretRecord(
        tenant_id=row[0],
        name=secret_name(row[1]),
        version=SecretVersion(
            version=int(row[2]),
            state=VersionState(row[3]),
            created_at=at(row[4]),
            activated_at=maybe(row[5]),
            demoted_at=maybe(row[6]),
            verify_until=maybe(row[7]),
            retired_at=maybe(row[8]),
        ),
        envelope=bytes(row[9]),
    )
