"""Subscriptions and deliveries in memory: the reference backend of the DeliveryStore port.

Every call runs to its end without awaiting anything in between, so each is one
transaction as far as other tasks of the process can see. One process only: `wait`
hears of this process's changes, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import msgspec

from adapters.memory.records import MemoryRecords
from adapters.signal import Signal
from core.domain.delivery import Attempt, Delivery, DeliveryStatus
from core.domain.errors import Conflict
from core.domain.idempotency import Record
from core.domain.rotation import SecretVersion
from core.domain.subscriptions import Subscription
from core.ports import (
    Claimed,
    DeliveryCounts,
    NewDelivery,
    Outcome,
    PageRequest,
    SecretRecord,
)

_replace = msgspec.structs.replace
_UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)


_Item = TypeVar("_Item", Delivery, Subscription)


def _page(items: list[_Item], page: PageRequest) -> list[_Item]:
    ordered = sorted(items, key=lambda item: item.id, reverse=page.order == "desc")
    if page.after is not None:
        after = page.after
        ordered = [i for i in ordered if (i.id < after if page.order == "desc" else i.id > after)]
    return list(ordered[: page.limit])


class _Checkpoint:
    __slots__ = ("dispatcher", "lease_until", "position")

    def __init__(self, position: int) -> None:
        self.position = position
        self.dispatcher: str | None = None
        self.lease_until: datetime | None = None


class MemorySubscriptions:
    def __init__(self, store: MemoryDeliveries) -> None:
        self._store = store

    async def add(
        self, subscription: Subscription, secret: SecretRecord, record: Record | None = None
    ) -> Subscription:
        store = self._store
        kept = store.check(record)
        checkpoint = store.checkpoint_rows.get(subscription.tenant_id)
        if checkpoint is None:
            checkpoint = store.checkpoint_rows[subscription.tenant_id] = _Checkpoint(
                subscription.start_position
            )
        start = max(subscription.start_position, checkpoint.position)
        stored = _replace(subscription, start_position=start)
        key = (stored.tenant_id, stored.id)
        if key in store.subs:
            raise Conflict(f"Subscription {stored.id} exists already.")
        store.subs[key] = stored
        store.secret_rows[key] = {secret.version.version: secret}
        store.records.put(kept)
        return stored

    async def get(self, tenant_id: str, subscription_id: str) -> Subscription | None:
        return self._store.subs.get((tenant_id, subscription_id))

    async def update(self, before: Subscription, after: Subscription) -> bool:
        store = self._store
        key = (before.tenant_id, before.id)
        stored = store.subs.get(key)
        if stored is None or stored.updated_at != before.updated_at:
            return False
        store.subs[key] = _replace(
            stored,
            name=after.name,
            url=after.url,
            description=after.description,
            enabled=after.enabled,
            filter=after.filter,
            ordering=after.ordering,
            disabled_reason=after.disabled_reason,
            failing_since=after.failing_since,
            updated_at=after.updated_at,
        )
        if after.enabled and not stored.enabled:
            store.signal.ring()
        return True

    async def delete(self, tenant_id: str, subscription_id: str) -> bool:
        store = self._store
        if store.subs.pop((tenant_id, subscription_id), None) is None:
            return False
        store.secret_rows.pop((tenant_id, subscription_id), None)
        for delivery_id in [
            d.id for d in store.rows.values() if d.subscription_id == subscription_id
        ]:
            store.drop(delivery_id)
        return True

    async def secrets(self, tenant_id: str, subscription_id: str) -> list[SecretRecord]:
        found = self._store.secret_rows.get((tenant_id, subscription_id), {})
        return [found[n] for n in sorted(found)]

    async def save_secrets(
        self,
        tenant_id: str,
        subscription_id: str,
        before: Sequence[SecretVersion],
        after: Sequence[SecretRecord],
        record: Record | None = None,
    ) -> None:
        kept = self._store.check(record)
        stored = self._store.secret_rows.get((tenant_id, subscription_id))
        if stored is None:
            raise Conflict("The subscription is gone.")
        planned = {v.version: v for v in before}
        for secret in after:
            number = secret.version.version
            current = stored.get(number)
            if number in planned:
                if current is None or current.version != planned[number]:
                    raise Conflict("The secret was changed by another writer.")
            elif current is not None:
                raise Conflict("The secret was changed by another writer.")
        for secret in after:
            stored[secret.version.version] = secret
        self._store.records.put(kept)

    async def unannounced(self) -> list[Subscription]:
        return sorted(
            (s for s in self._store.subs.values() if s.announced < s.disables),
            key=lambda s: s.id,
        )

    async def announce(self, tenant_id: str, subscription_id: str, announced: int) -> None:
        store = self._store
        stored = store.subs.get((tenant_id, subscription_id))
        if stored is not None and announced > stored.announced:
            store.subs[(tenant_id, subscription_id)] = _replace(stored, announced=announced)

    async def list(self, tenant_id: str, page: PageRequest) -> list[Subscription]:
        mine = [s for (t, _), s in self._store.subs.items() if t == tenant_id]
        return _page(mine, page)


class MemoryDeliveries:
    """DeliveryStore port over dictionaries (see the module docstring)."""

    def __init__(self, records: MemoryRecords | None = None) -> None:
        #: Idempotency-Key records (shared with the memory store by the bootstrap).
        self.records = records if records is not None else MemoryRecords()
        self.subs: dict[tuple[str, str], Subscription] = {}
        self.secret_rows: dict[tuple[str, str], dict[int, SecretRecord]] = {}
        self.checkpoint_rows: dict[str, _Checkpoint] = {}
        self.rows: dict[str, Delivery] = {}
        self.bodies: dict[str, bytes] = {}
        self.attempts: dict[str, list[Attempt]] = {}
        self.by_message: dict[tuple[str, str], str] = {}
        self.signal = Signal()
        self.subscriptions = MemorySubscriptions(self)

    def check(self, record: Record | None) -> list[Record]:
        """The records a write keeps (checked: `KeyInUse` when the key holds a live one)."""
        kept = [] if record is None else [record]
        self.records.check(kept, replace_expired=True)
        return kept

    def drop(self, delivery_id: str) -> None:
        delivery = self.rows.pop(delivery_id)
        self.bodies.pop(delivery_id, None)
        self.attempts.pop(delivery_id, None)
        self.by_message.pop((delivery.subscription_id, delivery.message_id), None)

    def _insert(self, new: NewDelivery, now: datetime) -> bool:
        key = (new.subscription_id, new.message_id)
        if key in self.by_message:
            return False
        self.rows[new.id] = Delivery(
            id=new.id,
            tenant_id=new.tenant_id,
            subscription_id=new.subscription_id,
            message_id=new.message_id,
            message_type=new.message_type,
            position=new.position,
            ordering_key=new.ordering_key,
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            message_time=new.message_time,
            created_at=now,
            correlation_id=new.correlation_id,
            causation_id=new.causation_id,
        )
        self.bodies[new.id] = new.body
        self.attempts[new.id] = []
        self.by_message[key] = new.id
        return True

    # --- the dispatcher ---

    async def checkpoints(self) -> dict[str, int]:
        return {tenant: row.position for tenant, row in self.checkpoint_rows.items()}

    async def lease_dispatch(
        self, tenant_id: str, dispatcher: str, now: datetime, until: datetime
    ) -> int | None:
        row = self.checkpoint_rows.get(tenant_id)
        if row is None:
            return None
        held = row.dispatcher not in (None, dispatcher)
        if held and row.lease_until is not None and row.lease_until > now:
            return None
        row.dispatcher, row.lease_until = dispatcher, until
        return row.position

    async def dispatch(
        self,
        tenant_id: str,
        expected: int,
        to: int,
        make: Callable[[Sequence[Subscription]], Sequence[NewDelivery]],
        now: datetime,
    ) -> int | None:
        row = self.checkpoint_rows.get(tenant_id)
        if row is None or row.position != expected:
            return None
        subscriptions = sorted(
            (s for (t, _), s in self.subs.items() if t == tenant_id), key=lambda s: s.id
        )
        added = sum(self._insert(new, now) for new in make(subscriptions))
        row.position = to
        if added:
            self.signal.ring()
        return added

    # --- deliverers ---

    async def claim(
        self,
        *,
        claim: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        retries: bool,
        room: int,
        rooms: Mapping[str, int],
        ordering_since: datetime,
    ) -> list[Claimed]:
        def due(d: Delivery) -> bool:
            return (
                d.status == DeliveryStatus.PENDING
                and d.next_attempt_at is not None
                and d.next_attempt_at <= now
                and (d.attempts > 0) == retries
            )

        def blocked(d: Delivery) -> bool:
            if d.ordering_key is None or d.created_at < ordering_since:
                return False
            return any(
                e.subscription_id == d.subscription_id
                and e.ordering_key == d.ordering_key
                and e.position < d.position
                and e.status in _UNFINISHED
                for e in self.rows.values()
            )

        candidates = sorted(
            (d for d in self.rows.values() if due(d)),
            key=lambda d: (d.next_attempt_at or now, d.position, d.id),
        )
        taken: dict[str, int] = {}
        claimed: list[Claimed] = []
        for delivery in candidates:
            if len(claimed) >= limit:
                break
            subscription = self.subs.get((delivery.tenant_id, delivery.subscription_id))
            if subscription is None or not subscription.enabled:
                continue
            sub_id = delivery.subscription_id
            if taken.get(sub_id, 0) >= rooms.get(sub_id, room) or blocked(delivery):
                continue
            taken[sub_id] = taken.get(sub_id, 0) + 1
            held = _replace(
                delivery,
                status=DeliveryStatus.DELIVERING,
                claimed_by=claim,
                lease_until=lease_until,
            )
            self.rows[delivery.id] = held
            claimed.append(
                Claimed(
                    delivery=held,
                    body=self.bodies[delivery.id],
                    subscription=subscription,
                    claim=claim,
                )
            )
        return claimed

    def _held(self, delivery_id: str, claim: str) -> Delivery | None:
        delivery = self.rows.get(delivery_id)
        if (
            delivery is None
            or delivery.status != DeliveryStatus.DELIVERING
            or delivery.claimed_by != claim
        ):
            return None
        return delivery

    async def finish(self, delivery_id: str, claim: str, outcome: Outcome) -> bool:
        delivery = self._held(delivery_id, claim)
        if delivery is None:
            return False
        attempt = _replace(outcome.attempt, delivery_id=delivery_id, number=delivery.attempts + 1)
        self.rows[delivery_id] = _replace(
            delivery,
            status=outcome.status,
            attempts=delivery.attempts + 1,
            round_attempts=delivery.round_attempts + 1,
            next_attempt_at=outcome.next_attempt_at,
            last_attempt_at=attempt.started_at,
            last_status_code=attempt.status_code,
            last_error=attempt.error,
            claimed_by=None,
            lease_until=None,
        )
        if outcome.status == DeliveryStatus.SUCCEEDED:
            self.bodies[delivery_id] = b""  # delivered: the log keeps the message
        self.attempts[delivery_id].append(attempt)
        key = (delivery.tenant_id, delivery.subscription_id)
        subscription = self.subs[key]
        if outcome.disable is not None and subscription.enabled:
            subscription = _replace(
                subscription,
                enabled=False,
                disabled_reason=outcome.disable,
                disables=subscription.disables + 1,
                updated_at=attempt.started_at,
            )
        if outcome.failing is True and subscription.failing_since is None:
            subscription = _replace(subscription, failing_since=attempt.started_at)
        elif outcome.failing is False and subscription.failing_since is not None:
            subscription = _replace(subscription, failing_since=None)
        if outcome.disable is not None:
            subscription = _replace(subscription, enabled=False)
        self.subs[key] = subscription
        return True

    async def release(self, delivery_id: str, claim: str, now: datetime) -> bool:
        delivery = self._held(delivery_id, claim)
        if delivery is None:
            return False
        self.rows[delivery_id] = _replace(
            delivery,
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            claimed_by=None,
            lease_until=None,
        )
        return True

    async def expire(self, now: datetime) -> int:
        lapsed = [
            d
            for d in self.rows.values()
            if d.status == DeliveryStatus.DELIVERING
            and d.lease_until is not None
            and d.lease_until < now
        ]
        for d in lapsed:
            self.rows[d.id] = _replace(
                d, status=DeliveryStatus.PENDING, next_attempt_at=now, claimed_by=None,
                lease_until=None,
            )  # fmt: skip
        if lapsed:
            self.signal.ring()
        return len(lapsed)

    async def next_due(self, retries: bool) -> datetime | None:
        times = []
        for d in self.rows.values():
            subscription = self.subs.get((d.tenant_id, d.subscription_id))
            if subscription is None or not subscription.enabled:
                continue
            if (
                d.status == DeliveryStatus.PENDING
                and d.next_attempt_at is not None
                and (d.attempts > 0) == retries
            ):
                times.append(d.next_attempt_at)
        return min(times, default=None)

    def mark(self) -> int:
        return self.signal.mark()

    async def wait(self, seconds: float, since: int | None = None) -> None:
        await self.signal.wait(seconds, since)

    # --- people ---

    async def requeue(
        self, deliveries: Sequence[NewDelivery], now: datetime, record: Record | None = None
    ) -> int:
        self.records.put(self.check(record))  # nothing below can fail
        changed = 0
        for new in deliveries:
            if (new.tenant_id, new.subscription_id) not in self.subs:
                continue
            existing = self.by_message.get((new.subscription_id, new.message_id))
            if existing is None:
                changed += self._insert(new, now)
                continue
            delivery = self.rows[existing]
            if delivery.status in _UNFINISHED:
                continue
            self.rows[existing] = _replace(
                delivery,
                status=DeliveryStatus.PENDING,
                round_attempts=0,
                next_attempt_at=now,
            )
            self.bodies[existing] = new.body
            changed += 1
        if changed:
            self.signal.ring()
        return changed

    async def redrive(
        self,
        tenant_id: str,
        subscription_id: str,
        since: datetime | None,
        until: datetime | None,
        now: datetime,
        *,
        record: Callable[[int], Record] | None = None,
    ) -> int:
        doomed = [
            delivery
            for delivery in self.rows.values()
            if delivery.tenant_id == tenant_id
            and delivery.subscription_id == subscription_id
            and delivery.status == DeliveryStatus.DEAD
            and (since is None or delivery.message_time >= since)
            and (until is None or delivery.message_time < until)
        ]
        self.records.put(self.check(None if record is None else record(len(doomed))))
        changed = 0
        for delivery in doomed:
            self.rows[delivery.id] = _replace(
                delivery, status=DeliveryStatus.PENDING, round_attempts=0, next_attempt_at=now
            )
            changed += 1
        if changed:
            self.signal.ring()
        return changed

    async def get(
        self, tenant_id: str, subscription_id: str, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]] | None:
        delivery = self.rows.get(delivery_id)
        if (
            delivery is None
            or delivery.tenant_id != tenant_id
            or delivery.subscription_id != subscription_id
        ):
            return None
        return delivery, list(self.attempts[delivery_id])

    async def attempts_of(
        self, tenant_id: str, delivery_ids: Collection[str]
    ) -> dict[str, list[Attempt]]:
        found: dict[str, list[Attempt]] = {}
        for ident in delivery_ids:
            delivery = self.rows.get(ident)
            if delivery is not None and delivery.tenant_id == tenant_id and self.attempts[ident]:
                found[ident] = list(self.attempts[ident])
        return found

    async def counts(self) -> DeliveryCounts:
        statuses = [d.status for d in self.rows.values()]
        return DeliveryCounts(
            pending=statuses.count(DeliveryStatus.PENDING),
            delivering=statuses.count(DeliveryStatus.DELIVERING),
            dead=statuses.count(DeliveryStatus.DEAD),
            disabled_subscriptions=sum(not s.enabled for s in self.subs.values()),
        )

    async def close(self) -> None:
        return None

    async def list(
        self,
        tenant_id: str,
        subscription_id: str,
        status: DeliveryStatus | None,
        page: PageRequest,
    ) -> list[Delivery]:
        mine = [
            d
            for d in self.rows.values()
            if d.tenant_id == tenant_id
            and d.subscription_id == subscription_id
            and (status is None or d.status == status)
        ]
        return _page(mine, page)
