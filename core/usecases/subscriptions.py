"""Subscriptions: create, read, change, delete; their secret; ping, replay, redrive; deliveries.

Every operation is scoped to the caller's tenant: another tenant's subscription is
"not found" (404), never "forbidden". The secret is never part of a subscription's
answers: `secret` reads it (audited), `rotate` makes a new one sign at once while the
old one keeps signing beside it for the grace asked (`core.domain.rotation`: a forced
rotation with that grace).

A subscription's start (`start_position`) is its tenant's log head when it is made,
raised by the store to the dispatcher's checkpoint if that is further: it gets the
messages committed after that. `replay` sends older ones (or again); `ping` appends a
`waypost.subscription.ping` message to the log, which reaches this subscription only,
through the same dispatcher and deliverers as every message.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import timedelta
from typing import Final

import msgspec

from core.domain.audit import AuditAction
from core.domain.commands import (
    CreateSubscription,
    PatchSubscription,
    Redrive,
    Replay,
    RotateSecret,
)
from core.domain.delivery import Attempt, Delivery, DeliveryStatus
from core.domain.errors import Conflict, FieldError, Invalid, raise_if
from core.domain.idempotency import KeyInUse
from core.domain.messages import TYPE_SUBSCRIPTION_PING, encode_message
from core.domain.model import SubscriptionPinged
from core.domain.rotation import (
    RotationEvent,
    RotationPolicy,
    apply,
    plan,
    signing,
)
from core.domain.subscriptions import (
    Subscription,
    matches,
    new_subscription,
    ordering_key,
    patched,
    secret_name,
)
from core.ports import NewDelivery, PageRequest, SecretRecord
from core.usecases.audit import Auditor
from core.usecases.common import Actor, Deps, Once, not_found
from core.usecases.delivery_deps import DeliveryDeps
from core.usecases.messages import MAX_ENTRIES, Messages

__all__ = ["MAX_GRACE_SECONDS", "Subscriptions"]

#: The longest grace a rotation may give the old secret.
MAX_GRACE_SECONDS: Final = 30 * 86_400
_ATTEMPTS: Final = 5
#: A rotation policy for "rotate when asked": the term never ends by itself.
_NEVER: Final = timedelta(days=365 * 1000)


class Subscriptions:
    def __init__(
        self,
        deps: Deps,
        delivery: DeliveryDeps,
        messages: Messages,
        audit: Auditor | None = None,
    ) -> None:
        self._deps = deps
        self._delivery = delivery
        self._store = delivery.store
        self._messages = messages
        self._audit = audit

    # --- the subscription itself ---------------------------------------------------------

    async def create(
        self,
        actor: Actor,
        cmd: CreateSubscription,
        once: Once[Subscription] | None = None,
    ) -> Subscription:
        """A new subscription; `once`: the request's Idempotency-Key (its record is stored
        with the subscription; a request answered before is answered again)."""
        deps = self._deps
        now = deps.clock.now()
        subscription = new_subscription(
            id=deps.ids.new_id(),
            tenant_id=actor.tenant_id,
            name=cmd.name,
            url=cmd.url,
            description=cmd.description,
            enabled=cmd.enabled,
            filter=cmd.filter,
            ordering=cmd.ordering,
            now=now,
            policy=self._delivery.url_policy,
        )
        await deps.recall(once)
        async with deps.store.read() as tx:
            head = await tx.log.head(actor.tenant_id)
        steps = plan([], self._rotation(timedelta(0)), now)
        [version] = apply([], steps, policy=self._rotation(timedelta(0)), now=now)
        secret = self._seal(subscription, version.version, self._delivery.new_secret())
        try:
            stored = await self._store.subscriptions.add(
                msgspec.structs.replace(subscription, start_position=head),
                SecretRecord(
                    tenant_id=actor.tenant_id,
                    name=secret_name(subscription.id),
                    version=version,
                    envelope=secret,
                ),
                None if once is None else once.record(subscription, now),
            )
        except KeyInUse:
            await deps.recall(once)  # a duplicate of this request committed first
            raise
        await self._record(actor, AuditAction.SECRET_CREATED, stored.id, 1, "subscription created")
        return stored

    async def get(self, actor: Actor, subscription_id: str) -> Subscription:
        found = await self._store.subscriptions.get(actor.tenant_id, subscription_id)
        if found is None:
            raise not_found("subscription", subscription_id)
        return found

    async def patch(
        self, actor: Actor, subscription_id: str, cmd: PatchSubscription
    ) -> Subscription:
        """Apply the change to the subscription as it is stored; if the registry changed it
        meanwhile (it disabled it), apply it again to what it did."""
        for _ in range(_ATTEMPTS):
            before = await self.get(actor, subscription_id)
            after = patched(
                before,
                name=cmd.name,
                url=cmd.url,
                description=cmd.description,
                enabled=cmd.enabled,
                filter=cmd.filter,
                ordering=cmd.ordering,
                now=max(self._deps.clock.now(), before.updated_at),
                policy=self._delivery.url_policy,
            )
            if after is before:
                return before
            if await self._store.subscriptions.update(before, after):
                return after
        raise Conflict("The subscription kept changing while it was being changed; try again.")

    async def delete(self, actor: Actor, subscription_id: str) -> None:
        if not await self._store.subscriptions.delete(actor.tenant_id, subscription_id):
            raise not_found("subscription", subscription_id)
        self._delivery.secrets.forget(subscription_id)

    # --- its secret ----------------------------------------------------------------------

    async def secret(self, actor: Actor, subscription_id: str) -> str:
        """The secret that signs now (the newest, during a rotation's grace)."""
        await self.get(actor, subscription_id)
        records = await self._store.subscriptions.secrets(actor.tenant_id, subscription_id)
        active = signing(r.version for r in records)
        if active is None:  # pragma: no cover - every subscription is made with one
            raise RuntimeError(f"subscription {subscription_id} has no active secret")
        [record] = [r for r in records if r.version.version == active.version]
        secret = self._open(record)
        await self._record(
            actor, AuditAction.SECRET_ACCESSED, subscription_id, active.version, "read"
        )
        return secret

    async def rotate(
        self,
        actor: Actor,
        subscription_id: str,
        cmd: RotateSecret,
        once: Once[str] | None = None,
    ) -> str:
        """A new secret signs from now on; the old one signs beside it for `grace_seconds`.
        `once`: the request's Idempotency-Key (what it renders is stored with the new
        secret: never the secret itself, see the route)."""
        if not 0 <= cmd.grace_seconds <= MAX_GRACE_SECONDS:
            raise Invalid(
                "The rotation is invalid",
                [FieldError("/grace_seconds", f"must be 0 to {MAX_GRACE_SECONDS} seconds")],
            )
        policy = self._rotation(timedelta(seconds=cmd.grace_seconds))
        subscription = await self.get(actor, subscription_id)
        await self._deps.recall(once)
        for _ in range(_ATTEMPTS):
            records = await self._store.subscriptions.secrets(actor.tenant_id, subscription_id)
            now = self._deps.clock.now()
            versions = [r.version for r in records]
            steps = plan(versions, policy, now, force=True)
            created = next(s.version for s in steps if s.event == RotationEvent.CREATE)
            secret = self._delivery.new_secret()
            sealed = {created: self._seal(subscription, created, secret)}
            sealed.update({r.version.version: r.envelope for r in records})
            after = [
                SecretRecord(
                    tenant_id=actor.tenant_id,
                    name=secret_name(subscription_id),
                    version=version,
                    envelope=sealed[version.version],
                )
                for version in apply(versions, steps, policy=policy, now=now)
            ]
            try:
                await self._store.subscriptions.save_secrets(
                    actor.tenant_id,
                    subscription_id,
                    versions,
                    after,
                    None if once is None else once.record(secret, now),
                )
            except KeyInUse:
                await self._deps.recall(once)  # a duplicate of this request committed first
                raise
            except Conflict:
                await self.get(actor, subscription_id)  # deleted meanwhile: 404
                continue  # another rotation came first: plan again from what it wrote
            self._delivery.secrets.forget(subscription_id)
            await self._record(
                actor, AuditAction.SECRET_ROTATED, subscription_id, created, "rotated"
            )
            return secret
        raise Conflict("The secret kept changing while it was being rotated; try again.")

    def _rotation(self, grace: timedelta) -> RotationPolicy:
        return RotationPolicy(rotate_every=_NEVER, grace=grace)

    def _seal(self, subscription: Subscription, version: int, secret: str) -> bytes:
        return self._delivery.sealer.seal(
            secret.encode(),
            tenant_id=subscription.tenant_id,
            name=secret_name(subscription.id),
            version=version,
        )

    def _open(self, record: SecretRecord) -> str:
        return self._delivery.sealer.open(
            record.envelope,
            tenant_id=record.tenant_id,
            name=record.name,
            version=record.version.version,
        ).decode()

    async def _record(
        self, actor: Actor, action: AuditAction, subscription_id: str, version: int, why: str
    ) -> None:
        if self._audit is not None:
            await self._audit.record(
                tenant_id=actor.tenant_id,
                actor=actor.principal,
                action=action,
                target=f"secret:{secret_name(subscription_id)}/{version}",
                reason=why,
            )

    # --- messages on their way -----------------------------------------------------------

    async def ping(self, actor: Actor, subscription_id: str, once: Once[str] | None = None) -> str:
        """Append a ping for the subscription to its tenant's log; answers the message id.
        `once`: the request's Idempotency-Key (its record is stored with the entry)."""
        await self.get(actor, subscription_id)
        deps = self._deps
        entries = deps.entries(
            [SubscriptionPinged(ping_id=deps.ids.new_id(), subscription_id=subscription_id)]
        )
        async with deps.write(actor.tenant_id, once) as tx:
            await tx.append(entries, actor.meta())
            deps.remember(tx, once, entries[0].id)
        return entries[0].id

    async def replay(
        self, actor: Actor, subscription_id: str, cmd: Replay, once: Once[int] | None = None
    ) -> int:
        """Queue every matching message after `cmd.after` (again); answers how many.

        Up to where the dispatcher has come (or the subscription's start, if that is
        further): the dispatcher sends what follows as it always does. A long replay is
        several transactions (a page of the log each); `once`'s record (the request's
        Idempotency-Key) is stored with the last: a replay cut short is made again whole."""
        if cmd.after < 0:
            raise Invalid("The replay is invalid", [FieldError("/after", "must be 0 or more")])
        subscription = await self.get(actor, subscription_id)
        await self._deps.recall(once)
        checkpoints = await self._store.checkpoints()
        end = max(checkpoints.get(actor.tenant_id, 0), subscription.start_position)
        position, queued = cmd.after, 0
        while True:
            if position >= end:
                await self._requeue([], queued, once)
                return queued
            page = await self._messages.after(actor, position, min(MAX_ENTRIES, end - position))
            made = []
            for item in page.messages:
                message = item.message
                if item.position > end:
                    break
                wanted = (
                    message.subject == subscription.id
                    if message.type == TYPE_SUBSCRIPTION_PING
                    else matches(subscription.filter, message)
                )
                if wanted:
                    made.append(
                        NewDelivery(
                            id=self._deps.ids.new_id(),
                            tenant_id=actor.tenant_id,
                            subscription_id=subscription.id,
                            message_id=message.id,
                            message_type=message.type,
                            position=item.position,
                            ordering_key=ordering_key(subscription, message),
                            body=encode_message(message),
                            message_time=message.time,
                            correlation_id=item.correlation_id,
                            causation_id=item.causation_id,
                        )
                    )
            queued += len(made)
            last = page.last >= end or page.last <= position
            await self._requeue(made, queued, once if last else None)
            if last:
                return queued
            position = page.last

    async def _requeue(self, made: list[NewDelivery], queued: int, once: Once[int] | None) -> None:
        now = self._deps.clock.now()
        try:
            await self._store.requeue(made, now, None if once is None else once.record(queued, now))
        except KeyInUse:
            await self._deps.recall(once)  # a duplicate of this request committed first
            raise

    async def redrive(
        self, actor: Actor, subscription_id: str, cmd: Redrive, once: Once[int] | None = None
    ) -> int:
        """Send the dead deliveries of messages committed in [since, until) again. `once`:
        the request's Idempotency-Key (its record is stored with the redrive)."""
        errors: list[FieldError] = []
        for field, moment in (("/since", cmd.since), ("/until", cmd.until)):
            if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
                errors.append(FieldError(field, "must have a time zone (RFC 3339)"))
        raise_if(errors, "The redrive is invalid")
        if cmd.since is not None and cmd.until is not None and cmd.since >= cmd.until:
            raise Invalid("The redrive is invalid", [FieldError("/until", "must be after since")])
        await self.get(actor, subscription_id)
        await self._deps.recall(once)
        now = self._deps.clock.now()
        try:
            return await self._store.redrive(
                actor.tenant_id,
                subscription_id,
                cmd.since,
                cmd.until,
                now,
                record=None if once is None else functools.partial(once.record, now=now),
            )
        except KeyInUse:
            await self._deps.recall(once)  # a duplicate of this request committed first
            raise

    async def deliveries(
        self,
        actor: Actor,
        subscription_id: str,
        status: DeliveryStatus | None,
        page: PageRequest,
    ) -> list[Delivery]:
        await self.get(actor, subscription_id)
        return await self._store.list(actor.tenant_id, subscription_id, status, page)

    async def delivery(
        self, actor: Actor, subscription_id: str, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]]:
        found = await self._store.get(actor.tenant_id, subscription_id, delivery_id)
        if found is None:
            raise not_found("delivery", delivery_id)
        return found

    async def attempts(
        self, actor: Actor, delivery_ids: Collection[str]
    ) -> dict[str, list[Attempt]]:
        """The attempts of each of the tenant's deliveries among `delivery_ids` (one read;
        those never attempted, or not the tenant's, are left out)."""
        return await self._store.attempts_of(actor.tenant_id, delivery_ids)

    async def list(self, actor: Actor, page: PageRequest) -> list[Subscription]:
        return await self._store.subscriptions.list(actor.tenant_id, page)
