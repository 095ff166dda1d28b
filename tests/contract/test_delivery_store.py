"""The DeliveryStore port's promise, proved once per backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import pytest

from adapters.system import UlidSource
from core.domain.delivery import Attempt, DeliveryStatus
from core.domain.errors import Conflict
from core.domain.rotation import RotationPolicy, SecretVersion, VersionState, apply, plan
from core.domain.subscriptions import Subscription, SubscriptionFilter, secret_name
from core.ports import DeliveryStore, NewDelivery, Outcome, PageRequest, SecretRecord
from tests.backends import BACKENDS

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IDS = UlidSource()
TENANT, OTHER = "tenant-a", "tenant-b"
FAR = T0 + timedelta(days=365)


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[DeliveryStore]:
    backend: str = request.param
    opened: DeliveryStore
    if backend == "memory":
        from adapters.memory.delivery import MemoryDeliveries

        opened = MemoryDeliveries()
    else:
        from adapters.sql.delivery import SqlDeliveries
        from adapters.sql.migrations import migrate

        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'waypost.db'}"
        else:
            request.applymarker(pytest.mark.postgres)
            url = request.getfixturevalue("fresh_database")
        await migrate(url)
        opened = await SqlDeliveries.connect(url)
    try:
        yield opened
    finally:
        await opened.close()


def subscription(tenant_id: str = TENANT, **over: Any) -> Subscription:
    fields: dict[str, object] = {
        "id": IDS.new_id(),
        "tenant_id": tenant_id,
        "name": "hooks",
        "url": "https://example.com/hook",
        "description": "",
        "enabled": True,
        "filter": SubscriptionFilter(types=("ci.build",), success=True),
        "ordering": "none",
        "created_at": T0,
        "updated_at": T0,
        "start_position": 0,
    }
    fields.update(over)
    return Subscription(**fields)  # type: ignore[arg-type]


def secret_of(sub: Subscription, envelope: bytes = b"sealed-1") -> SecretRecord:
    return SecretRecord(
        tenant_id=sub.tenant_id,
        name=secret_name(sub.id),
        version=SecretVersion(version=1, state=VersionState.ACTIVE, created_at=T0, activated_at=T0),
        envelope=envelope,
    )


async def add(store: DeliveryStore, **over: Any) -> Subscription:
    sub = subscription(**over)
    return await store.subscriptions.add(sub, secret_of(sub))


def new(sub: Subscription, position: int, *, key: str | None = None, **over: object) -> NewDelivery:
    fields: dict[str, object] = {
        "id": IDS.new_id(),
        "tenant_id": sub.tenant_id,
        "subscription_id": sub.id,
        "message_id": IDS.new_id(),
        "message_type": "ci.build",
        "position": position,
        "ordering_key": key,
        "body": b'{"n": %d}' % position,
        "message_time": T0 + timedelta(seconds=position),
    }
    fields.update(over)
    return NewDelivery(**fields)  # type: ignore[arg-type]


async def dispatch(
    store: DeliveryStore, sub: Subscription, made: Sequence[NewDelivery], now: datetime = T0
) -> None:
    checkpoints = await store.checkpoints()
    start = checkpoints[sub.tenant_id]
    end = max([d.position for d in made] + [start])
    added = await store.dispatch(sub.tenant_id, start, end, lambda _: made, now)
    assert added == len(made)


async def claim(store: DeliveryStore, now: datetime = T0, **over: object) -> list[str]:
    given: dict[str, object] = {
        "claim": IDS.new_id(),
        "now": now,
        "lease_until": now + timedelta(seconds=30),
        "limit": 100,
        "retries": False,
        "room": 100,
        "rooms": {},
        "ordering_since": now - timedelta(hours=1),
    }
    given.update(over)
    claimed = await store.claim(**given)  # type: ignore[arg-type]
    return [c.delivery.id for c in claimed]


def outcome(
    status: DeliveryStatus,
    *,
    at: datetime = T0,
    next_at: datetime | None = None,
    code: int | None = 200,
    failing: bool = False,
    disable: str | None = None,
    number: int = 1,
    delivery_id: str = "",
) -> Outcome:
    return Outcome(
        attempt=Attempt(
            delivery_id=delivery_id,
            number=number,
            started_at=at,
            duration_ms=12.5,
            status_code=code,
            error=None if code is not None and code < 300 else "refused",
            response_excerpt="ok",
        ),
        status=status,
        next_attempt_at=next_at,
        failing=failing,
        disable=disable,
    )


# --- subscriptions -------------------------------------------------------------------------------


async def test_a_subscription_round_trips(store: DeliveryStore) -> None:
    made = subscription(
        description="all builds",
        ordering="artifact",
        filter=SubscriptionFilter(types=("a", "b"), subjects=(IDS.new_id(),), package="rpm"),
        start_position=7,
    )
    stored = await store.subscriptions.add(made, secret_of(made))
    assert stored == made
    assert await store.subscriptions.get(TENANT, made.id) == made
    assert await store.subscriptions.get(OTHER, made.id) is None
    assert await store.subscriptions.get(TENANT, IDS.new_id()) is None
    with pytest.raises(Conflict):
        await store.subscriptions.add(made, secret_of(made))


async def test_a_new_subscription_starts_no_earlier_than_the_dispatcher(
    store: DeliveryStore,
) -> None:
    first = await add(store, start_position=5)
    assert first.start_position == 5
    assert (await store.checkpoints())[TENANT] == 5
    assert await store.dispatch(TENANT, 5, 20, lambda subs: [], T0) == 0
    late = await add(store, start_position=12)  # the log head it read was behind
    assert late.start_position == 20
    ahead = await add(store, start_position=25)
    assert ahead.start_position == 25
    assert (await store.checkpoints()) == {TENANT: 20}


async def test_subscriptions_page_by_id(store: DeliveryStore) -> None:
    made = [await add(store) for _ in range(5)]
    await add(store, tenant_id=OTHER)
    ids = [s.id for s in made]
    newest = await store.subscriptions.list(TENANT, PageRequest(limit=3))
    assert [s.id for s in newest] == ids[::-1][:3]
    rest = await store.subscriptions.list(TENANT, PageRequest(limit=3, after=newest[-1].id))
    assert [s.id for s in rest] == ids[::-1][3:]
    oldest = await store.subscriptions.list(TENANT, PageRequest(limit=10, order="asc"))
    assert [s.id for s in oldest] == ids


async def test_update_is_compare_and_set(store: DeliveryStore) -> None:
    sub = await add(store)
    later = T0 + timedelta(minutes=1)
    changed = msgspec.structs.replace(
        sub,
        name="renamed",
        url="https://example.org/x",
        description="d",
        enabled=False,
        filter=SubscriptionFilter(),
        ordering="artifact",
        disabled_reason="why",
        failing_since=T0,
        updated_at=later,
    )
    assert await store.subscriptions.update(sub, changed)
    assert await store.subscriptions.get(TENANT, sub.id) == changed
    assert not await store.subscriptions.update(sub, changed)  # `sub` is stale now
    gone = subscription()
    assert not await store.subscriptions.update(gone, gone)


async def test_delete_takes_secrets_deliveries_and_attempts_along(store: DeliveryStore) -> None:
    sub = await add(store)
    keep = await add(store)
    await dispatch(store, sub, [new(sub, 1), new(keep, 1)])
    [held] = await claim(store, rooms={keep.id: 0})
    assert await store.finish(held, "nobody", outcome(DeliveryStatus.SUCCEEDED)) is False
    assert await store.subscriptions.delete(TENANT, sub.id)
    assert not await store.subscriptions.delete(TENANT, sub.id)
    assert await store.subscriptions.get(TENANT, sub.id) is None
    assert await store.subscriptions.secrets(TENANT, sub.id) == []
    assert await store.list(TENANT, sub.id, None, PageRequest()) == []
    assert await store.get(TENANT, sub.id, held) is None
    assert len(await store.list(TENANT, keep.id, None, PageRequest())) == 1
    assert not await store.subscriptions.delete(OTHER, keep.id)


async def test_secrets_are_versioned_and_saved_with_compare_and_set(store: DeliveryStore) -> None:
    sub = await add(store)
    [first] = await store.subscriptions.secrets(TENANT, sub.id)
    assert first == secret_of(sub)
    policy = RotationPolicy(rotate_every=timedelta(days=36500), grace=timedelta(hours=1))
    now = T0 + timedelta(days=1)
    steps = plan([first.version], policy, now, force=True)
    after = [
        SecretRecord(
            tenant_id=TENANT,
            name=secret_name(sub.id),
            version=v,
            envelope=first.envelope if v.version == 1 else b"sealed-2",
        )
        for v in apply([first.version], steps, policy=policy, now=now)
    ]
    await store.subscriptions.save_secrets(TENANT, sub.id, [first.version], after)
    stored = await store.subscriptions.secrets(TENANT, sub.id)
    assert stored == after
    assert [r.version.state for r in stored] == [VersionState.VERIFY_ONLY, VersionState.ACTIVE]
    with pytest.raises(Conflict):  # planned from what is no longer there
        await store.subscriptions.save_secrets(TENANT, sub.id, [first.version], after)
    assert await store.subscriptions.secrets(TENANT, sub.id) == after


async def test_disables_are_announced_once(store: DeliveryStore) -> None:
    sub = await add(store)
    await dispatch(store, sub, [new(sub, 1)])
    [held] = await claim(store)
    gone = outcome(DeliveryStatus.PENDING, code=410, next_at=T0, failing=True, disable="410")
    assert await store.finish(held, (await _claim_of(store, held)), gone)
    disabled = await store.subscriptions.get(TENANT, sub.id)
    assert disabled is not None
    assert (disabled.enabled, disabled.disabled_reason, disabled.disables) == (False, "410", 1)
    assert [s.id for s in await store.subscriptions.unannounced()] == [sub.id]
    await store.subscriptions.announce(TENANT, sub.id, 1)
    await store.subscriptions.announce(TENANT, sub.id, 0)  # never lowers it
    assert await store.subscriptions.unannounced() == []
    again = await store.subscriptions.get(TENANT, sub.id)
    assert again is not None
    assert again.announced == 1


async def _claim_of(store: DeliveryStore, delivery_id: str) -> str:
    sub_id = dict(await _deliveries(store))[delivery_id]
    found = await store.get(TENANT, sub_id, delivery_id)
    assert found is not None
    assert found[0].claimed_by is not None
    return found[0].claimed_by


async def _deliveries(store: DeliveryStore) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for sub in await store.subscriptions.list(TENANT, PageRequest(limit=1000)):
        listed = await store.list(TENANT, sub.id, None, PageRequest(limit=1000))
        found.extend((d.id, sub.id) for d in listed)
    return found


# --- the dispatcher -------------------------------------------------------------------------------


async def test_dispatch_moves_the_checkpoint_with_its_deliveries_or_not_at_all(
    store: DeliveryStore,
) -> None:
    sub = await add(store)
    disabled = await add(store, enabled=False)
    seen: list[list[str]] = []

    def make(subs: Sequence[Subscription]) -> list[NewDelivery]:
        seen.append([s.id for s in subs])
        return [new(s, 3) for s in subs]

    assert await store.dispatch(TENANT, 1, 5, make, T0) is None  # not where it is
    assert seen == []
    assert await store.dispatch(TENANT, 0, 5, make, T0) == 2
    assert seen == [sorted([sub.id, disabled.id])]  # a disabled one's deliveries wait
    assert await store.checkpoints() == {TENANT: 5}
    assert await store.dispatch(TENANT, 0, 9, make, T0) is None  # another came first
    listed = await store.list(TENANT, sub.id, None, PageRequest())
    assert [(d.status, d.position, d.attempts, d.next_attempt_at) for d in listed] == [
        (DeliveryStatus.PENDING, 3, 0, T0)
    ]
    assert await store.dispatch(OTHER, 0, 5, make, T0) is None  # no subscription, no row


async def test_a_delivery_replay_made_first_is_left_alone_by_the_dispatcher(
    store: DeliveryStore,
) -> None:
    sub = await add(store)
    made = new(sub, 1)
    assert await store.requeue([made], T0) == 1
    again = msgspec.structs.replace(made, id=IDS.new_id())
    assert await store.dispatch(TENANT, 0, 1, lambda _: [again], T0) == 0
    assert len(await store.list(TENANT, sub.id, None, PageRequest())) == 1


async def test_the_dispatch_lease_is_exclusive_until_it_lapses(store: DeliveryStore) -> None:
    assert await store.lease_dispatch(TENANT, "a", T0, T0 + timedelta(seconds=10)) is None
    await add(store, start_position=4)
    assert await store.lease_dispatch(TENANT, "a", T0, T0 + timedelta(seconds=10)) == 4
    assert await store.lease_dispatch(TENANT, "b", T0, T0 + timedelta(seconds=10)) is None
    assert await store.lease_dispatch(TENANT, "a", T0, T0 + timedelta(seconds=20)) == 4
    lapsed = T0 + timedelta(seconds=21)
    assert await store.lease_dispatch(TENANT, "b", lapsed, lapsed + timedelta(seconds=10)) == 4
    assert await store.lease_dispatch(TENANT, "a", lapsed, lapsed + timedelta(seconds=10)) is None


# --- claims ---------------------------------------------------------------------------------------


async def test_claims_take_due_deliveries_of_enabled_subscriptions_soonest_first(
    store: DeliveryStore,
) -> None:
    sub = await add(store)
    off = await add(store, enabled=False)
    made = [new(sub, p) for p in (1, 2, 3)]
    await dispatch(store, sub, [*made, new(off, 4)])
    first = await claim(store, limit=2)
    assert first == [made[0].id, made[1].id]
    assert await claim(store, limit=5) == [made[2].id]
    assert await claim(store, limit=5) == []  # every one is held, the disabled one waits
    found = await store.get(TENANT, sub.id, made[0].id)
    assert found is not None
    assert found[0].status == DeliveryStatus.DELIVERING
    assert found[0].lease_until == T0 + timedelta(seconds=30)


async def test_claimed_carries_the_body_and_the_subscription(store: DeliveryStore) -> None:
    sub = await add(store)
    made = new(sub, 1)
    await dispatch(store, sub, [made])
    [held] = await store.claim(
        claim="c1",
        now=T0,
        lease_until=T0 + timedelta(seconds=5),
        limit=1,
        retries=False,
        room=1,
        rooms={},
        ordering_since=T0,
    )
    assert held.body == made.body
    assert held.subscription == sub
    assert held.claim == "c1"
    assert held.delivery.message_id == made.message_id
    assert held.delivery.claimed_by == "c1"
    assert (held.delivery.correlation_id, held.delivery.causation_id) == (None, None)


async def test_a_delivery_keeps_its_messages_trace(store: DeliveryStore) -> None:
    """The correlation and causation ids of the message's entry (what an attempt's span
    continues), whether dispatched or requeued by a replay."""
    sub = await add(store)
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    dispatched = new(sub, 1, correlation_id=trace, causation_id=span)
    await dispatch(store, sub, [dispatched])
    replayed = new(sub, 2, correlation_id="req-2", causation_id=None)
    assert await store.requeue([replayed], T0) == 1
    for made in (dispatched, replayed):
        found = await store.get(sub.tenant_id, sub.id, made.id)
        assert found is not None
        assert (found[0].correlation_id, found[0].causation_id) == (
            made.correlation_id,
            made.causation_id,
        )
    held = await store.claim(
        claim="c1",
        now=T0,
        lease_until=T0 + timedelta(seconds=5),
        limit=2,
        retries=False,
        room=2,
        rooms={},
        ordering_since=T0,
    )
    assert {(h.delivery.correlation_id, h.delivery.causation_id) for h in held} == {
        (trace, span),
        ("req-2", None),
    }


async def test_first_attempts_and_retries_are_claimed_apart(store: DeliveryStore) -> None:
    sub = await add(store)
    made = [new(sub, 1), new(sub, 2)]
    await dispatch(store, sub, made)
    [held] = await claim(store, limit=1)
    token = await _claim_of(store, held)
    retry = outcome(DeliveryStatus.PENDING, code=500, next_at=T0, failing=True)
    assert await store.finish(held, token, retry)
    assert await claim(store, retries=True) == [held]
    assert await claim(store, retries=True) == []
    assert await claim(store) == [made[1].id]


async def test_a_future_delivery_is_not_due(store: DeliveryStore) -> None:
    sub = await add(store)
    off = await add(store, enabled=False)
    await dispatch(store, sub, [new(off, 1)], now=T0)  # waits: not due for anyone
    await dispatch(store, sub, [new(sub, 2)], now=T0 + timedelta(seconds=5))
    assert await claim(store, now=T0) == []
    assert await store.next_due(False) == T0 + timedelta(seconds=5)
    assert await store.next_due(True) is None
    [made] = await claim(store, now=T0 + timedelta(seconds=5))
    retry = outcome(DeliveryStatus.PENDING, code=500, next_at=T0 + timedelta(seconds=9))
    assert await store.finish(made, await _claim_of(store, made), retry)
    assert await store.next_due(False) is None
    assert await store.next_due(True) == T0 + timedelta(seconds=9)


async def test_room_bounds_each_subscription(store: DeliveryStore) -> None:
    busy = await add(store)
    quiet = await add(store)
    made = [new(busy, p) for p in range(1, 7)] + [new(quiet, p) for p in (7, 8)]
    await dispatch(store, busy, made)
    got = await claim(store, room=2, rooms={quiet.id: 1})
    assert got == [made[0].id, made[1].id, made[6].id]
    assert await claim(store, room=3, rooms={busy.id: 0}) == [made[7].id]


async def test_two_claims_never_share_a_delivery(store: DeliveryStore) -> None:
    sub = await add(store)
    await dispatch(store, sub, [new(sub, p) for p in range(1, 41)])
    results: list[list[str]] = []

    async def one() -> None:
        results.append(await claim(store, limit=15))

    async with anyio.create_task_group() as tasks:
        for _ in range(4):
            tasks.start_soon(one)
    taken = list(itertools.chain.from_iterable(results))
    assert len(taken) == len(set(taken)) == 40


async def test_ordering_artifact_holds_a_later_delivery_behind_an_unfinished_one(
    store: DeliveryStore,
) -> None:
    sub = await add(store, ordering="artifact")
    first, second = new(sub, 1, key="k1"), new(sub, 2, key="k1")
    other = new(sub, 3, key="k2")
    loose = new(sub, 4)
    await dispatch(store, sub, [first, second, other, loose])
    since = T0 - timedelta(seconds=1)
    got = await claim(store, ordering_since=since)
    assert got == [first.id, other.id, loose.id]  # `second` waits behind `first`
    token = await _claim_of(store, first.id)
    retry = outcome(DeliveryStatus.PENDING, code=500, next_at=T0, failing=True)
    assert await store.finish(first.id, token, retry)
    assert await claim(store, ordering_since=since) == []  # still behind the pending one
    assert await claim(store, retries=True, ordering_since=since) == [first.id]
    dead = outcome(DeliveryStatus.DEAD, code=500, failing=True, number=2)
    assert await store.finish(first.id, await _claim_of(store, first.id), dead)
    assert await claim(store, ordering_since=since) == [second.id]  # dead does not block


async def test_ordering_waits_a_bounded_time(store: DeliveryStore) -> None:
    sub = await add(store, ordering="artifact")
    first, second = new(sub, 1, key="k"), new(sub, 2, key="k")
    await dispatch(store, sub, [first, second])
    assert await claim(store, limit=1) == [first.id]
    # created before `ordering_since`: it has waited long enough
    assert await claim(store, ordering_since=T0 + timedelta(seconds=1)) == [second.id]


# --- finish, release, expire -------------------------------------------------------------------


async def test_finish_is_fenced_by_the_claim(store: DeliveryStore) -> None:
    sub = await add(store)
    made = new(sub, 1)
    await dispatch(store, sub, [made])
    await claim(store, claim="mine")
    assert not await store.finish(made.id, "theirs", outcome(DeliveryStatus.SUCCEEDED))
    assert await store.finish(made.id, "mine", outcome(DeliveryStatus.SUCCEEDED))
    assert not await store.finish(made.id, "mine", outcome(DeliveryStatus.SUCCEEDED))
    found = await store.get(TENANT, sub.id, made.id)
    assert found is not None
    delivery, attempts = found
    assert (delivery.status, delivery.attempts, delivery.round_attempts) == (
        DeliveryStatus.SUCCEEDED,
        1,
        1,
    )
    assert (delivery.last_status_code, delivery.next_attempt_at, delivery.claimed_by) == (
        200,
        None,
        None,
    )
    assert delivery.last_attempt_at == T0
    assert [(a.number, a.status_code, a.duration_ms, a.response_excerpt) for a in attempts] == [
        (1, 200, 12.5, "ok")
    ]


async def test_finishes_at_once_are_each_fenced_and_recorded(store: DeliveryStore) -> None:
    # Finishes that arrive together may be written together (one statement or one
    # transaction); each still answers for its own claim and outcome.
    one, two = await add(store), await add(store)
    made = [new(one, n) for n in range(1, 7)] + [new(two, n) for n in range(7, 13)]
    for sub in (one, two):
        await dispatch(store, sub, [d for d in made if d.subscription_id == sub.id])
    assert len(await claim(store, claim="c")) == 12
    retry_at = T0 + timedelta(minutes=5)
    plain = {  # outcomes that leave the subscription as it is (failing None)
        d.id: msgspec.structs.replace(
            outcome(DeliveryStatus.SUCCEEDED)
            if n % 2
            else outcome(DeliveryStatus.PENDING, next_at=retry_at, code=500),
            failing=None,
        )
        for n, d in enumerate(made[:10])
    }
    streak = outcome(DeliveryStatus.PENDING, next_at=retry_at, code=503, failing=True)
    answers: dict[str, bool] = {}

    async def finish(delivery_id: str, claimed_by: str, done: Outcome) -> None:
        answers[delivery_id] = await store.finish(delivery_id, claimed_by, done)

    async with anyio.create_task_group() as group:
        for delivery_id, done in plain.items():
            group.start_soon(finish, delivery_id, "c", done)
        group.start_soon(finish, made[10].id, "stale", plain[made[0].id])
        group.start_soon(finish, made[11].id, "c", streak)
    assert answers == {**dict.fromkeys(plain, True), made[10].id: False, made[11].id: True}
    for n, d in enumerate(made):
        found = await store.get(TENANT, d.subscription_id, d.id)
        assert found is not None
        delivery, attempts = found
        if n == 10:
            assert (delivery.status, attempts) == (DeliveryStatus.DELIVERING, [])
            continue
        want = plain.get(d.id, streak)
        assert delivery.status == want.status
        assert delivery.next_attempt_at == want.next_attempt_at
        assert (delivery.attempts, delivery.claimed_by) == (1, None)
        assert [(a.number, a.status_code, a.started_at) for a in attempts] == [
            (1, want.attempt.status_code, T0)
        ]
    failing = await store.subscriptions.get(TENANT, two.id)
    assert failing is not None
    assert failing.failing_since == T0
    healthy = await store.subscriptions.get(TENANT, one.id)
    assert healthy is not None
    assert healthy.failing_since is None


async def test_attempts_are_numbered_and_the_failing_streak_is_kept(store: DeliveryStore) -> None:
    sub = await add(store)
    made = new(sub, 1)
    await dispatch(store, sub, [made])
    for n in (1, 2):
        at = T0 + timedelta(minutes=n)
        [_] = await claim(store, now=at, retries=n > 1)
        failed = outcome(DeliveryStatus.PENDING, at=at, next_at=at, code=None, failing=True)
        assert await store.finish(made.id, await _claim_of(store, made.id), failed)
        current = await store.subscriptions.get(TENANT, sub.id)
        assert current is not None
        assert current.failing_since == T0 + timedelta(minutes=1)  # the first failure's
    at = T0 + timedelta(minutes=3)
    [_] = await claim(store, now=at, retries=True)
    assert await store.finish(
        made.id, await _claim_of(store, made.id), outcome(DeliveryStatus.SUCCEEDED, at=at)
    )
    healthy = await store.subscriptions.get(TENANT, sub.id)
    assert healthy is not None
    assert healthy.failing_since is None
    found = await store.get(TENANT, sub.id, made.id)
    assert found is not None
    assert [a.number for a in found[1]] == [1, 2, 3]
    assert [a.error for a in found[1]] == ["refused", "refused", None]
    assert found[0].attempts == 3


async def test_the_attempts_of_a_page_of_deliveries_are_one_read(store: DeliveryStore) -> None:
    sub = await add(store)
    tried, never = new(sub, 1), new(sub, 2)
    await dispatch(store, sub, [tried])
    for n in (1, 2):
        at = T0 + timedelta(minutes=n)
        [_] = await claim(store, now=at, retries=n > 1)
        failed = outcome(DeliveryStatus.PENDING, at=at, next_at=at, code=500, failing=True)
        assert await store.finish(tried.id, await _claim_of(store, tried.id), failed)
    await dispatch(store, sub, [never])
    found = await store.attempts_of(TENANT, [tried.id, never.id, tried.id, "nothing"])
    assert list(found) == [tried.id]
    assert [(a.delivery_id, a.number) for a in found[tried.id]] == [(tried.id, 1), (tried.id, 2)]
    single = await store.get(TENANT, sub.id, tried.id)
    assert single is not None
    assert found[tried.id] == single[1]
    assert await store.attempts_of(OTHER, [tried.id]) == {}
    assert await store.attempts_of(TENANT, []) == {}


async def test_release_hands_back_without_an_attempt(store: DeliveryStore) -> None:
    sub = await add(store)
    made = new(sub, 1)
    await dispatch(store, sub, [made])
    await claim(store, claim="c")
    later = T0 + timedelta(seconds=3)
    assert not await store.release(made.id, "other", later)
    assert await store.release(made.id, "c", later)
    found = await store.get(TENANT, sub.id, made.id)
    assert found is not None
    assert (found[0].status, found[0].attempts, found[0].next_attempt_at) == (
        DeliveryStatus.PENDING,
        0,
        later,
    )
    assert found[1] == []
    assert await claim(store, now=later) == [made.id]  # still a first attempt


async def test_a_lapsed_lease_expires_and_its_late_finish_is_refused(store: DeliveryStore) -> None:
    sub = await add(store)
    made = new(sub, 1)
    await dispatch(store, sub, [made])
    await claim(store, claim="dead-worker")
    assert await store.expire(T0 + timedelta(seconds=30)) == 0
    assert await store.expire(T0 + timedelta(seconds=31)) == 1
    assert await claim(store, now=T0 + timedelta(seconds=31), claim="alive") == [made.id]
    assert not await store.finish(made.id, "dead-worker", outcome(DeliveryStatus.SUCCEEDED))
    assert await store.finish(made.id, "alive", outcome(DeliveryStatus.SUCCEEDED))


# --- replay, redrive, reading -----------------------------------------------------------------


async def test_requeue_adds_and_sends_finished_ones_again(store: DeliveryStore) -> None:
    sub = await add(store)
    done, dead, waiting = new(sub, 1), new(sub, 2), new(sub, 3)
    await dispatch(store, sub, [done, dead, waiting])
    await claim(store, claim="c", limit=2)
    assert await store.finish(done.id, "c", outcome(DeliveryStatus.SUCCEEDED))
    assert await store.finish(dead.id, "c", outcome(DeliveryStatus.DEAD, code=500, failing=True))
    fresh = new(sub, 4)
    later = T0 + timedelta(hours=1)
    again = [msgspec.structs.replace(d, id=IDS.new_id()) for d in (done, dead, waiting)]
    assert await store.requeue([*again, fresh], later) == 3
    by_id = {d.id: d for d in await store.list(TENANT, sub.id, None, PageRequest())}
    assert set(by_id) == {done.id, dead.id, waiting.id, fresh.id}
    for ident in (done.id, dead.id, fresh.id):
        assert by_id[ident].status == DeliveryStatus.PENDING
        assert by_id[ident].next_attempt_at == later
        assert by_id[ident].round_attempts == 0
    assert by_id[done.id].attempts == 1  # its history stays
    assert by_id[waiting.id].next_attempt_at == T0
    got = await store.claim(
        claim="d",
        now=later,
        lease_until=FAR,
        limit=10,
        retries=True,
        room=10,
        rooms={},
        ordering_since=T0,
    )
    assert {c.delivery.id: c.body for c in got} == {done.id: done.body, dead.id: dead.body}
    stranger = subscription()
    assert await store.requeue([new(stranger, 9)], later) == 0  # no such subscription


async def test_redrive_sends_dead_ones_of_a_window_again(store: DeliveryStore) -> None:
    sub = await add(store)
    made = [new(sub, p) for p in (1, 2, 3, 4)]
    await dispatch(store, sub, made)
    await claim(store, claim="c")
    for d in made[:3]:
        assert await store.finish(d.id, "c", outcome(DeliveryStatus.DEAD, code=500, failing=True))
    assert await store.finish(made[3].id, "c", outcome(DeliveryStatus.SUCCEEDED))
    later = T0 + timedelta(days=1)
    since, until = made[1].message_time, made[2].message_time
    assert await store.redrive(OTHER, sub.id, None, None, later) == 0
    assert await store.redrive(TENANT, sub.id, since, until, later) == 1  # [since, until)
    assert await store.redrive(TENANT, sub.id, None, None, later) == 2
    assert await store.redrive(TENANT, sub.id, None, None, later) == 0
    dead = await store.list(TENANT, sub.id, DeliveryStatus.DEAD, PageRequest())
    assert dead == []
    pending = await store.list(TENANT, sub.id, DeliveryStatus.PENDING, PageRequest())
    assert {d.id for d in pending} == {d.id for d in made[:3]}
    assert all(d.round_attempts == 0 and d.attempts == 1 for d in pending)


async def test_listing_by_status_and_page(store: DeliveryStore) -> None:
    sub = await add(store)
    made = [new(sub, p) for p in range(1, 6)]
    await dispatch(store, sub, made)
    ids = sorted(d.id for d in made)
    page = await store.list(TENANT, sub.id, None, PageRequest(limit=2))
    assert [d.id for d in page] == ids[::-1][:2]
    more = await store.list(TENANT, sub.id, None, PageRequest(limit=10, after=page[-1].id))
    assert [d.id for d in more] == ids[::-1][2:]
    asc = await store.list(TENANT, sub.id, DeliveryStatus.PENDING, PageRequest(order="asc"))
    assert [d.id for d in asc] == ids
    assert await store.list(TENANT, sub.id, DeliveryStatus.SUCCEEDED, PageRequest()) == []
    assert await store.list(OTHER, sub.id, None, PageRequest()) == []
    assert await store.get(OTHER, sub.id, made[0].id) is None


async def test_counts(store: DeliveryStore) -> None:
    sub = await add(store)
    await add(store, enabled=False)
    made = [new(sub, p) for p in (1, 2, 3)]
    await dispatch(store, sub, made)
    await claim(store, claim="c", limit=2)
    assert await store.finish(made[0].id, "c", outcome(DeliveryStatus.DEAD, code=500, failing=True))
    counts = await store.counts()
    assert (counts.pending, counts.delivering, counts.dead, counts.disabled_subscriptions) == (
        1,
        1,
        1,
        1,
    )


async def test_wait_wakes_when_deliveries_are_made(store: DeliveryStore) -> None:
    sub = await add(store)
    await store.wait(0.01)  # PostgreSQL: starts listening
    woke = anyio.Event()

    async def waiter() -> None:
        await store.wait(30)
        woke.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(waiter)
        await anyio.sleep(0.05)
        await dispatch(store, sub, [new(sub, 1)])
        with anyio.fail_after(10):
            await woke.wait()


async def test_a_wait_since_a_mark_returns_at_once_for_deliveries_made_after_it(
    store: DeliveryStore,
) -> None:
    # A deliverer takes the mark before it claims: deliveries made while it claims must
    # not be slept through because their wake-up came before it waited.
    sub = await add(store)
    await store.wait(0.01)  # PostgreSQL: starts listening
    mark = store.mark()
    with anyio.fail_after(5):
        await store.wait(0.3, mark)  # nothing made since: waits its time out
    assert store.mark() == mark
    await dispatch(store, sub, [new(sub, 1)])
    with anyio.fail_after(10):
        while store.mark() == mark:  # noqa: ASYNC110 (PostgreSQL: the NOTIFY comes round)
            await anyio.sleep(0.01)
    started = anyio.current_time()
    await store.wait(30, mark)
    assert anyio.current_time() - started < 1
    await anyio.sleep(0.5)  # PostgreSQL rings twice: at once, and when its NOTIFY comes round
    later = store.mark()
    started = anyio.current_time()
    await store.wait(0.2, later)
    assert anyio.current_time() - started >= 0.15


async def test_an_outcome_that_changes_no_streak_leaves_the_subscription(
    store: DeliveryStore,
) -> None:
    sub = await add(store)
    made = [new(sub, 1), new(sub, 2)]
    await dispatch(store, sub, made)
    await claim(store, claim="c")
    failed = outcome(DeliveryStatus.PENDING, code=500, next_at=T0, failing=True)
    assert await store.finish(made[0].id, "c", failed)
    unchanged = Outcome(
        attempt=failed.attempt,
        status=DeliveryStatus.SUCCEEDED,
        next_attempt_at=None,
        failing=None,
    )
    assert await store.finish(made[1].id, "c", unchanged)
    after = await store.subscriptions.get(TENANT, sub.id)
    assert after is not None
    assert after.failing_since == T0
