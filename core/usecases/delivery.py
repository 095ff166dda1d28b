"""Delivery: the dispatcher, the deliverer and the announcer of disabled subscriptions.

The log is the outbox. The *dispatcher* follows each tenant's log by position from
its checkpoint and makes one delivery per (message, subscription that gets it); the
checkpoint moves in the same transaction as the deliveries (`DeliveryStore.dispatch`),
so a crash never skips a message and never makes one twice, and of two dispatchers
the second finds the checkpoint moved and makes nothing. A lease per tenant keeps the
others from reading the log for nothing meanwhile.

The *deliverer* claims due deliveries (a claim is a lease and a fence) and attempts
each once (`attempt`: one attempt, in one call): sign it with the subscription's
secrets, send it through the `WebhookSender`, let the core decide what follows
(`core.domain.delivery.plan`) and write that only if the claim still holds. A
subscription's circuit breaker (`core.domain.breaker`, per process) holds its
deliveries back while its target keeps failing.

The *announcer* appends a `waypost.subscription.disabled` message for each time the
registry disabled a subscription, exactly once (the subscription's log stream counts
the announcements; see `Announcer`).

Loops, concurrency, wake-ups and time live in the entrypoint (entrypoints/worker.py):
these classes keep no clock and start no task.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

import msgspec

from core.domain import breaker as breakers
from core.domain import signatures
from core.domain.delivery import (
    Attempt,
    DeliveryEvent,
    Verdict,
    classify,
    plan,
)
from core.domain.errors import StreamVersionConflict
from core.domain.messages import Positioned, encode_message
from core.domain.model import SubscriptionDisabled
from core.domain.subscriptions import Subscription, ordering_key, recipients
from core.ports import AppendMeta, Claimed, NewDelivery, Outcome, WebhookRequest
from core.usecases.common import Actor, Deps
from core.usecases.delivery_deps import DeliveryDeps
from core.usecases.messages import MAX_ENTRIES, Messages

__all__ = ["Announcer", "AttemptReport", "Deliverer", "Dispatcher"]

#: Who the dispatcher reads the logs as, and who appends announcements.
DISPATCHER: Final = "system:dispatcher"
ANNOUNCER: Final = "system:delivery"
#: Breakers kept per process at most (closed ones with nothing counted are forgotten first).
MAX_BREAKERS: Final = 10_000


class Dispatcher:
    """Makes the deliveries of every tenant's new messages (see the module docstring)."""

    def __init__(
        self,
        deps: Deps,
        delivery: DeliveryDeps,
        messages: Messages,
        *,
        name: str,
        lease: timedelta = timedelta(seconds=5),
    ) -> None:
        self._deps = deps
        self._store = delivery.store
        self._messages = messages
        self.name = name
        self._lease = lease
        #: Whether the last pass found any tenant with a subscription.
        self.subscribed = True

    async def dispatch_once(self, batch: int = MAX_ENTRIES) -> int:
        """One pass over every tenant whose log is ahead of its checkpoint; answers how
        many deliveries it made. A tenant has a checkpoint from its first subscription on:
        with none anywhere (`subscribed` False after the pass) the logs are not read."""
        checkpoints = await self._store.checkpoints()
        self.subscribed = bool(checkpoints)
        if not checkpoints:
            return 0
        async with self._deps.store.read() as tx:
            heads = await tx.log.heads()
        made = 0
        for tenant_id, checkpoint in sorted(checkpoints.items()):
            head = heads.get(tenant_id, 0)
            if head > checkpoint:
                made += await self._tenant(tenant_id, head, batch)
        return made

    async def _tenant(self, tenant_id: str, head: int, batch: int) -> int:
        clock = self._deps.clock
        now = clock.now()
        position = await self._store.lease_dispatch(tenant_id, self.name, now, now + self._lease)
        if position is None:
            return 0  # another dispatcher is at it
        actor = Actor(tenant_id=tenant_id, principal=DISPATCHER)
        made = 0
        while position < head:
            page = await self._messages.after(actor, position, batch)

            def make(
                subscriptions: Sequence[Subscription], messages: list[Positioned] = page.messages
            ) -> list[NewDelivery]:
                return self._deliveries(tenant_id, subscriptions, messages)

            added = await self._store.dispatch(tenant_id, position, page.last, make, clock.now())
            if added is None:
                break  # another dispatcher moved the checkpoint first
            made += added
            position = page.last
        return made

    def _deliveries(
        self, tenant_id: str, subscriptions: Sequence[Subscription], messages: list[Positioned]
    ) -> list[NewDelivery]:
        ids = self._deps.ids
        made: list[NewDelivery] = []
        for item in messages:
            message = item.message
            wanted = recipients(subscriptions, message, item.position)
            if not wanted:
                continue
            body = encode_message(message)
            made.extend(
                NewDelivery(
                    id=ids.new_id(),
                    tenant_id=tenant_id,
                    subscription_id=subscription.id,
                    message_id=message.id,
                    message_type=message.type,
                    position=item.position,
                    ordering_key=ordering_key(subscription, message),
                    body=body,
                    message_time=message.time,
                    correlation_id=item.correlation_id,
                    causation_id=item.causation_id,
                )
                for subscription in wanted
            )
        return made


class AttemptReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt came to, for the entrypoint's logs and metrics (no secret, no body)."""

    delivery_id: str
    subscription_id: str
    tenant_id: str
    message_id: str
    #: None: not attempted (handed back: its breaker opened, it was disabled meanwhile)
    verdict: Verdict | None
    #: the delivery's event (succeed, retry, give_up, hold, release)
    event: DeliveryEvent
    number: int
    status_code: int | None = None
    failure: str | None = None
    error: str | None = None
    duration_ms: float = 0.0
    next_attempt_at: datetime | None = None
    #: False: the claim no longer held the delivery when the outcome was written
    applied: bool = True
    #: the subscription was disabled by this outcome, for this reason
    disabled: str | None = None
    #: seconds from the message's commit to this attempt's start
    lag_seconds: float = 0.0


class Deliverer:
    """Claims due deliveries and attempts them (see the module docstring).

    `name` identifies the process in claim tokens (`<name>:<n>`), so that a claim's
    holder is known; each claim has a token of its own."""

    def __init__(self, deps: Deps, delivery: DeliveryDeps, *, name: str, lease: timedelta) -> None:
        if delivery.sender is None:
            raise ValueError("a deliverer needs a WebhookSender")
        self._deps = deps
        self._delivery = delivery
        self._store = delivery.store
        self._sender = delivery.sender
        self.name = name
        self.lease = lease
        self._claims = itertools.count(1)
        self._breakers: dict[str, breakers.Breaker] = {}

    # --- breakers ---

    def _seconds(self, now: datetime) -> float:
        return now.timestamp()

    def room(self, subscription_id: str, in_flight: int, cap: int, now: datetime) -> int:
        """How many more of the subscription's deliveries may start now: its cap less those
        in flight; none while its breaker is open; one probe when half-open."""
        found = self._breakers.get(subscription_id)
        if found is None or found.state == breakers.BreakerState.CLOSED:
            return max(0, cap - in_flight)
        _, allowed = breakers.ask(found, self._seconds(now), self._delivery.breaker)
        return 1 if allowed and in_flight == 0 else 0

    def breaker_states(self) -> dict[breakers.BreakerState, int]:
        """How many subscriptions' breakers are in each state (for the metrics)."""
        counts = dict.fromkeys(breakers.BreakerState, 0)
        for found in self._breakers.values():
            counts[found.state] += 1
        return counts

    def _record(self, subscription_id: str, ok: bool, now: datetime) -> None:
        policy = self._delivery.breaker
        seconds = self._seconds(now)
        current = self._breakers.get(subscription_id) or breakers.start(seconds)
        after = breakers.report(current, ok, seconds, policy)
        if breakers.closed(after):
            self._breakers.pop(subscription_id, None)
            return
        self._breakers[subscription_id] = after
        if len(self._breakers) > MAX_BREAKERS:
            idle = next((k for k, b in self._breakers.items() if b.state == "closed"), None)
            self._breakers.pop(idle if idle is not None else next(iter(self._breakers)))

    # --- claims and attempts ---

    async def claim(
        self, *, limit: int, retries: bool, in_flight: Mapping[str, int], cap: int
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries: first attempts, or `retries`; at most `cap`
        of a subscription in flight in this process (counting `in_flight`)."""
        now = self._deps.clock.now()
        known = set(in_flight) | set(self._breakers)
        rooms = {s: self.room(s, in_flight.get(s, 0), cap, now) for s in known}
        return await self._store.claim(
            claim=f"{self.name}:{next(self._claims)}",
            now=now,
            lease_until=now + self.lease,
            limit=limit,
            retries=retries,
            room=cap,
            rooms=rooms,
            ordering_since=now - self._delivery.ordering_wait,
        )

    async def attempt(
        self, claimed: Claimed, headers: Sequence[tuple[str, str]] = ()
    ) -> AttemptReport:
        """One attempt of one claimed delivery, from signing to the written outcome.
        `headers` go along unsigned (transport headers: a trace's `traceparent`)."""
        delivery, subscription = claimed.delivery, claimed.subscription
        clock, policy = self._deps.clock, self._delivery.breaker
        started = clock.now()
        seconds = self._seconds(started)
        found = self._breakers.get(subscription.id)
        if found is not None:
            found, allowed = breakers.ask(found, seconds, policy)
            self._breakers[subscription.id] = found
            if not allowed:
                return await self._release(claimed, started)
        secrets = await self._secrets(subscription, started)
        if not secrets:  # deleted since the claim: its secrets went with it
            return await self._release(claimed, started)
        request = WebhookRequest(
            url=subscription.url,
            headers=[
                *signatures.headers(
                    secrets,
                    delivery.message_id,
                    int(seconds),
                    claimed.body,
                    self._delivery.user_agent,
                ),
                *headers,
            ],
            body=claimed.body,
            timeout_seconds=self._delivery.timeout.total_seconds(),
        )
        answer = await self._sender.send(request)
        verdict = classify(answer.status_code)
        decided = plan(
            verdict=verdict,
            round_attempts=delivery.round_attempts + 1,
            retry_after=answer.retry_after,
            failing_since=subscription.failing_since,
            now=clock.now(),
            policy=self._delivery.retry,
            random=self._delivery.randomness.random(),
        )
        error = answer.error
        if error is None and verdict != Verdict.SUCCESS and answer.status_code is not None:
            error = f"HTTP {answer.status_code}"
        attempt = Attempt(
            delivery_id=delivery.id,
            number=delivery.attempts + 1,
            started_at=started,
            duration_ms=answer.duration_ms,
            status_code=answer.status_code,
            error=error,
            response_excerpt=answer.excerpt,
        )
        applied = await self._store.finish(
            delivery.id,
            claimed.claim,
            Outcome(
                attempt=attempt,
                status=decided.status,
                next_attempt_at=decided.next_attempt_at,
                # only a change of the failing streak is written (most attempts change none)
                failing=(
                    None
                    if decided.failing == (subscription.failing_since is not None)
                    else decided.failing
                ),
                disable=decided.disable if subscription.enabled else None,
            ),
        )
        self._record(subscription.id, verdict == Verdict.SUCCESS, clock.now())
        return AttemptReport(
            delivery_id=delivery.id,
            subscription_id=subscription.id,
            tenant_id=delivery.tenant_id,
            message_id=delivery.message_id,
            verdict=verdict,
            event=decided.event,
            number=attempt.number,
            status_code=answer.status_code,
            failure=answer.failure,
            error=error,
            duration_ms=answer.duration_ms,
            next_attempt_at=decided.next_attempt_at,
            applied=applied,
            disabled=decided.disable,
            lag_seconds=(started - delivery.message_time).total_seconds(),
        )

    async def release(self, claimed: Claimed) -> AttemptReport:
        """Hand a claimed delivery back unattempted (the deliverer stops)."""
        return await self._release(claimed, self._deps.clock.now())

    async def _release(self, claimed: Claimed, now: datetime) -> AttemptReport:
        delivery = claimed.delivery
        applied = await self._store.release(delivery.id, claimed.claim, now)
        return AttemptReport(
            delivery_id=delivery.id,
            subscription_id=delivery.subscription_id,
            tenant_id=delivery.tenant_id,
            message_id=delivery.message_id,
            verdict=None,
            event=DeliveryEvent.RELEASE,
            number=delivery.attempts,
            applied=applied,
        )

    async def _secrets(self, subscription: Subscription, now: datetime) -> list[str]:
        kept = self._delivery.secrets
        records = kept.fresh(subscription.id, now)
        if records is None:
            records = await self._store.subscriptions.secrets(
                subscription.tenant_id, subscription.id
            )
            kept.keep(subscription.id, records, now)
        return kept.signing(subscription.id, records, now)

    def now(self) -> datetime:
        return self._deps.clock.now()

    async def expire(self) -> int:
        """Deliveries whose lease lapsed (a deliverer died): due again now."""
        return await self._store.expire(self._deps.clock.now())

    async def next_due(self, retries: bool) -> datetime | None:
        return await self._store.next_due(retries)


class Announcer:
    """Appends one `waypost.subscription.disabled` message per time the registry disabled a
    subscription. The subscription's stream in its tenant's log holds exactly these
    announcements, so under the tenant's writer lock its version says how many were
    made: an announcement is appended only while that is fewer than the disables, and
    two announcers (or a crash between the append and `announce`) never make two."""

    def __init__(self, deps: Deps, delivery: DeliveryDeps) -> None:
        self._deps = deps
        self._store = delivery.store

    async def announce_once(self) -> list[Subscription]:
        """Announce what is due; answers the subscriptions announced."""
        return [
            subscription
            for subscription in await self._store.subscriptions.unannounced()
            if await self._announce(subscription)
        ]

    async def _announce(self, subscription: Subscription) -> bool:
        deps = self._deps
        tenant_id, stream = subscription.tenant_id, subscription.id
        event = SubscriptionDisabled(
            subscription_id=stream,
            reason=subscription.disabled_reason or "disabled by the registry",
        )
        appended = False
        try:
            async with deps.store.write(tenant_id) as tx:
                version = await tx.log.stream_version(tenant_id, stream)
                if version < subscription.disables:
                    entries = deps.entries([event], {stream: version})
                    await tx.append(entries, AppendMeta(actor=ANNOUNCER))
                    version += 1
                    appended = True
        except StreamVersionConflict:  # pragma: no cover - the lock makes this impossible
            return False
        await self._store.subscriptions.announce(tenant_id, stream, version)
        return appended
