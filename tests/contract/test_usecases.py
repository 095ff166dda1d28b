"""The use cases over every backend: the registry behaves the same on memory, SQLite, PostgreSQL."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from core.domain.commands import (
    CreateGroup,
    CreateTenant,
    PatchGroup,
    PatchTenant,
    RecordEvent,
    RegisterReceiver,
)
from core.domain.errors import Conflict, Invalid, NotFound, TooLarge
from core.domain.events import MAX_BATCH_EVENTS
from core.domain.model import Nvrpp, Receiver
from core.ports import (
    CompletionFilter,
    EventFilter,
    GroupFilter,
    Order,
    PageRequest,
    ReceiverFilter,
)
from core.usecases import Actor, Services

pytestmark = pytest.mark.anyio

KEY = Nvrpp(name="app", version="1.0", release="1", platform_id="x86_64", package="rpm")
SCHEMA = {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}


async def actor(services: Services, slug: str = "acme") -> Actor:
    tenant = await services.tenants.create(
        CreateTenant(slug=slug, name=slug.title()), Actor(tenant_id="-", principal="root").meta()
    )
    return Actor(tenant_id=tenant.id, principal="tester", correlation_id=f"req-{slug}")


async def receiver(services: Services, who: Actor, name: str = "build", **extra: Any) -> Receiver:
    cmd = RegisterReceiver(
        name=name,
        type=extra.get("type", "waypost.build"),
        version=extra.get("version", "1"),
        description=extra.get("description", ""),
        schema=extra.get("schema", SCHEMA),
    )
    registered, _ = await services.receivers.register(who, cmd)
    return registered


def event(receiver_id: str, success: bool = True, key: Nvrpp = KEY, **extra: Any) -> RecordEvent:
    return RecordEvent(
        name=key.name,
        version=key.version,
        release=key.release,
        platform_id=key.platform_id,
        package=key.package,
        payload=extra.get("payload", {"build": 1}),
        success=success,
        event_receiver_id=receiver_id,
    )


# --- tenants -------------------------------------------------------------------------------


async def test_tenants_create_get_patch_list_and_unique_slug(services: Services) -> None:
    root = Actor(tenant_id="-", principal="root").meta()
    created = await services.tenants.create(CreateTenant(slug="  Acme-1 ", name="Acme"), root)
    assert created.slug == "acme-1"
    assert await services.tenants.get("ACME-1") == created
    with pytest.raises(Conflict):
        await services.tenants.create(CreateTenant(slug="acme-1", name="Again"), root)
    with pytest.raises(Invalid):
        await services.tenants.create(CreateTenant(slug="admin", name="Reserved"), root)
    patched = await services.tenants.patch("acme-1", PatchTenant(disabled=True), root)
    assert patched.disabled
    assert (await services.tenants.get("acme-1")).disabled
    assert await services.tenants.list(PageRequest()) == [patched]
    with pytest.raises(NotFound):
        await services.tenants.get("nobody")
    with pytest.raises(NotFound):
        await services.tenants.get("--")


# --- receivers -----------------------------------------------------------------------------


async def test_receiver_registration_is_idempotent_and_conflicts_on_difference(
    services: Services,
) -> None:
    who = await actor(services)
    cmd = RegisterReceiver(name="build", type="t", version="1", schema=SCHEMA)
    first, created = await services.receivers.register(who, cmd)
    assert created
    again, created_again = await services.receivers.register(who, cmd)
    assert (again, created_again) == (first, False)
    with pytest.raises(Conflict):
        await services.receivers.register(who, msgspec.structs.replace(cmd, description="other"))
    with pytest.raises(Conflict):
        await services.receivers.register(who, msgspec.structs.replace(cmd, schema={}))
    newer, _ = await services.receivers.register(
        who, msgspec.structs.replace(cmd, version="2", schema={})
    )
    assert newer.id != first.id
    assert await services.receivers.get(who, first.id) == first


async def test_receivers_list_filters_and_pages(services: Services) -> None:
    who = await actor(services)
    made = [await receiver(services, who, name=f"r{i % 3}", version=str(i)) for i in range(7)]
    everything = await services.receivers.list(who, ReceiverFilter(), PageRequest(limit=1000))
    assert [r.id for r in everything] == sorted((r.id for r in made), reverse=True)
    only = await services.receivers.list(who, ReceiverFilter(name="r1"), PageRequest())
    assert {r.name for r in only} == {"r1"}
    assert len(only) == 2
    assert await services.receivers.list(
        who, ReceiverFilter(name="r1", version="4"), PageRequest()
    ) == [made[4]]
    asc = await collect_pages(lambda p: services.receivers.list(who, ReceiverFilter(), p), "asc", 3)
    assert [r.id for r in asc] == sorted(r.id for r in made)
    by_content = ReceiverFilter(fingerprint=made[5].fingerprint)
    assert await services.receivers.list(who, by_content, PageRequest()) == [made[5]]
    nothing = ReceiverFilter(fingerprint="0" * 64)
    assert await services.receivers.list(who, nothing, PageRequest()) == []


async def test_receivers_get_many_reads_the_tenants_own_and_skips_the_rest(
    services: Services,
) -> None:
    who, other = await actor(services), await actor(services, "globex")
    mine = [await receiver(services, who, name=f"r{i}") for i in range(3)]
    theirs = await receiver(services, other, name="theirs")
    asked = [r.id for r in mine] + [theirs.id, "01ARZ3NDEKTSV4RRFFQ69G5FAV"]
    assert await services.receivers.get_many(who, asked) == {r.id: r for r in mine}
    assert await services.receivers.get_many(who, []) == {}


async def collect_pages(fetch: Any, order: Order, limit: int) -> list[Any]:
    items: list[Any] = []
    after = None
    while True:
        page = await fetch(PageRequest(limit=limit, after=after, order=order))
        items.extend(page)
        if len(page) < limit:
            return items
        after = page[-1].id


# --- events --------------------------------------------------------------------------------


async def test_record_and_read_an_event(services: Services) -> None:
    who = await actor(services)
    r = await receiver(services, who)
    recorded = await services.events.record(who, event(r.id, payload={"build": 7}))
    assert await services.events.get(who, recorded.id) == recorded
    assert recorded.payload == {"build": 7}
    assert recorded.tenant_id == who.tenant_id


async def test_refused_events_store_nothing(services: Services) -> None:
    who = await actor(services)
    r = await receiver(services, who)
    with pytest.raises(Invalid) as info:
        await services.events.record(who, event(r.id, payload={"build": "seven", "x": 1}))
    assert [e.field for e in info.value.errors] == ["/payload/build"]
    with pytest.raises(Invalid) as unknown:
        await services.events.record(who, event("01J00000000000000000000000"))
    assert unknown.value.errors[0].field == "/event_receiver_id"
    assert await services.events.list(who, EventFilter(), PageRequest()) == []
    async with services.deps.store.read() as tx:
        assert await tx.log.head(who.tenant_id) == 2  # tenant + receiver, no event


async def test_batch_is_all_or_nothing_and_reports_every_error(services: Services) -> None:
    who = await actor(services)
    r = await receiver(services, who)
    good = event(r.id)
    bad = event(r.id, payload={"build": "x"})
    with pytest.raises(Invalid) as info:
        await services.events.record_batch(who, [good, bad, good, event("nope")])
    assert [e.field for e in info.value.errors] == [
        "/events/1/payload/build",
        "/events/3/event_receiver_id",
    ]
    assert await services.events.list(who, EventFilter(), PageRequest()) == []
    recorded = await services.events.record_batch(who, [good] * 3)
    assert len({e.id for e in recorded}) == 3
    listed = await services.events.list(who, EventFilter(), PageRequest(order="asc"))
    assert [e.id for e in listed] == [e.id for e in recorded]


async def test_batch_size_limits(services: Services) -> None:
    who = await actor(services)
    r = await receiver(services, who, schema={})
    with pytest.raises(Invalid):
        await services.events.record_batch(who, [])
    with pytest.raises(TooLarge):
        await services.events.record_batch(who, [event(r.id)] * (MAX_BATCH_EVENTS + 1))
    recorded = await services.events.record_batch(who, [event(r.id)] * MAX_BATCH_EVENTS)
    assert len(recorded) == MAX_BATCH_EVENTS


async def test_events_list_filters_and_pagination(services: Services) -> None:
    who = await actor(services)
    a = await receiver(services, who, name="a", schema={})
    b = await receiver(services, who, name="b", schema={})
    other = Nvrpp(name="lib", version="2", release="3", platform_id="arm64", package="deb")
    made = [
        await services.events.record(
            who, event(a.id if i % 2 else b.id, success=i % 3 != 0, key=KEY if i < 8 else other)
        )
        for i in range(12)
    ]
    everything = await services.events.list(who, EventFilter(), PageRequest(limit=1000))
    assert [e.id for e in everything] == [e.id for e in reversed(made)]
    paged = await collect_pages(lambda p: services.events.list(who, EventFilter(), p), "desc", 5)
    assert paged == everything
    for where, expect in [
        (EventFilter(event_receiver_id=a.id), [e for e in made if e.event_receiver_id == a.id]),
        (EventFilter(success=False), [e for e in made if not e.success]),
        (EventFilter(name="lib", platform_id="arm64"), made[8:]),
        (EventFilter(version="1.0", release="1", package="rpm"), made[:8]),
        (EventFilter(since=made[3].created_at, until=made[6].created_at), made[3:6]),
        (EventFilter(name="nothing"), []),
    ]:
        found = await services.events.list(who, where, PageRequest(limit=1000, order="asc"))
        assert [e.id for e in found] == [e.id for e in expect], where


# --- groups and the gate -------------------------------------------------------------------


async def test_a_gate_fires_once_and_tells_its_status(services: Services) -> None:
    who = await actor(services)
    build, test = (
        await receiver(services, who, name="build"),
        await receiver(services, who, name="test"),
    )
    group = await services.groups.create(
        who,
        CreateGroup(
            name="release", type="gate", version="1", event_receiver_ids=[build.id, test.id]
        ),
    )
    first = await services.events.record(who, event(build.id))
    status = await services.groups.status(who, group.id, KEY)
    assert not status.complete
    assert [(m.event_receiver_id, m.passing, m.latest_event) for m in status.members] == [
        (build.id, True, first),
        (test.id, False, None),
    ]
    second = await services.events.record(who, event(test.id))
    assert (await services.groups.status(who, group.id, KEY)).complete
    await services.events.record(who, event(build.id))  # already complete: no second firing
    [done] = await services.groups.completions(who, group.id, CompletionFilter(), PageRequest())
    assert done.triggering_event_id == second.id
    assert done.member_event_ids == (first.id, second.id)
    assert done.key == KEY
    await services.events.record(who, event(test.id, success=False))
    await services.events.record(who, event(test.id))
    assert (
        len(await services.groups.completions(who, group.id, CompletionFilter(), PageRequest()))
        == 2
    )
    assert (
        await services.groups.completions(
            who, group.id, CompletionFilter(name="other"), PageRequest()
        )
        == []
    )


async def test_a_batch_fires_groups_in_order(services: Services) -> None:
    who = await actor(services)
    a, b = await receiver(services, who, name="a"), await receiver(services, who, name="b")
    group = await services.groups.create(
        who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[a.id, b.id])
    )
    recorded = await services.events.record_batch(
        who, [event(a.id), event(b.id), event(b.id, success=False), event(b.id)]
    )
    fired = await services.groups.completions(
        who, group.id, CompletionFilter(), PageRequest(order="asc")
    )
    assert [c.triggering_event_id for c in fired] == [recorded[1].id, recorded[3].id]


async def test_a_recording_tells_the_completions_it_fired(services: Services) -> None:
    who = await actor(services)
    a, b = await receiver(services, who, name="a"), await receiver(services, who, name="b")
    group = await services.groups.create(
        who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[a.id, b.id])
    )
    first = await services.events.record_outcome(who, event(a.id))
    assert (len(first.events), first.completions) == (1, [])
    second = await services.events.record_outcome(who, event(b.id))
    [fired] = second.completions
    assert (fired.group_id, fired.triggering_event_id) == (group.id, second.events[0].id)
    batch = await services.events.record_batch_outcome(
        who, [event(a.id), event(b.id, success=False), event(b.id)]
    )
    assert len(batch.events) == 3
    assert [c.triggering_event_id for c in batch.completions] == [batch.events[2].id]
    stored = await services.groups.completions(
        who, group.id, CompletionFilter(), PageRequest(order="asc")
    )
    assert stored == [fired, *batch.completions]


async def test_group_patch_delete_list(services: Services) -> None:
    who = await actor(services)
    a, b, c = [await receiver(services, who, name=n) for n in "abc"]
    group = await services.groups.create(
        who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[a.id, b.id])
    )
    with pytest.raises(Invalid):
        await services.groups.create(
            who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=["x"])
        )
    patched = await services.groups.patch(
        who,
        group.id,
        PatchGroup(enabled=False, add_receiver_ids=[c.id], remove_receiver_ids=[a.id]),
    )
    assert patched.event_receiver_ids == (b.id, c.id)
    assert not patched.enabled
    assert await services.groups.get(who, group.id) == patched
    with pytest.raises(Invalid):
        await services.groups.patch(
            who, group.id, PatchGroup(add_receiver_ids=["01J00000000000000000000000"])
        )
    assert await services.groups.list(who, GroupFilter(enabled=False), PageRequest()) == [patched]
    assert await services.groups.list(who, GroupFilter(enabled=True), PageRequest()) == []
    assert await services.groups.containing(who, [c.id]) == [patched]
    assert await services.groups.containing(who, [a.id]) == []
    other = await actor(services, "globex")
    assert await services.groups.containing(other, [b.id, c.id]) == []
    # a disabled group never fires, and the receivers' groups are looked up as they are now
    await services.events.record_batch(who, [event(b.id), event(c.id)])
    assert await services.groups.completions(who, group.id, CompletionFilter(), PageRequest()) == []
    await services.groups.delete(who, group.id)
    with pytest.raises(NotFound):
        await services.groups.get(who, group.id)
    with pytest.raises(NotFound):
        await services.groups.delete(who, group.id)
    with pytest.raises(NotFound):
        await services.groups.status(who, group.id, KEY)


async def test_another_tenants_objects_are_not_found(services: Services) -> None:
    acme, other = await actor(services, "acme"), await actor(services, "other")
    r = await receiver(services, acme)
    e = await services.events.record(acme, event(r.id))
    g = await services.groups.create(
        acme, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[r.id])
    )
    with pytest.raises(NotFound):
        await services.receivers.get(other, r.id)
    with pytest.raises(NotFound):
        await services.events.get(other, e.id)
    for call in (
        services.groups.get(other, g.id),
        services.groups.status(other, g.id, KEY),
        services.groups.delete(other, g.id),
        services.groups.patch(other, g.id, PatchGroup(enabled=False)),
        services.groups.completions(other, g.id, CompletionFilter(), PageRequest()),
    ):
        with pytest.raises(NotFound):
            await call
    with pytest.raises(Invalid):  # another tenant's receiver is unknown here
        await services.events.record(other, event(r.id))
    with pytest.raises(Invalid):
        await services.groups.create(
            other, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[r.id])
        )
    assert await services.events.list(other, EventFilter(), PageRequest()) == []
    assert await services.receivers.list(other, ReceiverFilter(), PageRequest()) == []
    # the same triple is free in another tenant
    assert (await receiver(services, other)).id != r.id


async def test_concurrent_last_successes_fire_exactly_once(services: Services) -> None:
    who = await actor(services)
    rounds = 15
    for round_ in range(rounds):
        a = await receiver(services, who, name=f"a{round_}", schema={})
        b = await receiver(services, who, name=f"b{round_}", schema={})
        group = await services.groups.create(
            who,
            CreateGroup(name=f"g{round_}", type="t", version="1", event_receiver_ids=[a.id, b.id]),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(services.events.record, who, event(a.id))
            tg.start_soon(services.events.record, who, event(b.id))
        fired = await services.groups.completions(who, group.id, CompletionFilter(), PageRequest())
        assert len(fired) == 1, f"round {round_}: fired {len(fired)} times"


async def test_rebuild_reproduces_every_read_model(services: Services) -> None:
    who = await actor(services)
    a, b = await receiver(services, who, name="a"), await receiver(services, who, name="b")
    group = await services.groups.create(
        who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[a.id, b.id])
    )
    other = Nvrpp(name="lib", version="2", release="1", platform_id="arm64", package="deb")
    await services.events.record_batch(
        who, [event(a.id), event(b.id), event(a.id, success=False), event(a.id, key=other)]
    )
    await services.groups.patch(who, group.id, PatchGroup(description="changed"))
    gone = await services.groups.create(
        who, CreateGroup(name="gone", type="t", version="1", event_receiver_ids=[a.id])
    )
    await services.groups.delete(who, gone.id)
    before = await services.replay.digest()
    applied = (await services.replay.rebuild()).applied
    # tenant, 2 receivers, group, 4 events, a completion, patch, create, delete
    assert applied == 12
    assert await services.replay.digest() == before
    status = await services.groups.status(who, group.id, KEY)
    assert [m.passing for m in status.members] == [False, True]


async def _three_tenants(services: Services) -> list[Actor]:
    made = []
    for slug in ("alpha", "beta", "gamma"):
        who = await actor(services, slug)
        build = await receiver(services, who)
        test = await receiver(services, who, name="test")
        await services.groups.create(
            who,
            CreateGroup(name="g", type="t", version="1", event_receiver_ids=[build.id, test.id]),
        )
        await services.events.record_batch(who, [event(build.id) for _ in range(7)])
        await services.events.record(who, event(test.id))
        made.append(who)
    return made


async def test_an_interrupted_replay_resumed_gives_the_digest_of_one_run(
    services: Services,
) -> None:
    await _three_tenants(services)
    before = await services.replay.digest()
    plan = await services.replay.plan(run="r")
    assert len(plan) == 3
    assert sum(plan.values()) == 3 * 13  # tenant, 2 receivers, group, 8 events, a completion

    seen = 0

    def stop_in_the_second_tenant(count: int) -> None:
        nonlocal seen
        seen += count
        if seen > 13:  # the first tenant is done, the second one begun
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await services.replay.rebuild(run="r", on_progress=stop_in_the_second_tenant)
    store = services.deps.store
    assert len(await store.replay_done("r")) == 1
    assert await services.replay.digest() == before  # no tenant is half-built
    assert len(await services.replay.plan(run="r")) == 2

    resumed = await services.replay.rebuild(run="r")
    assert (resumed.tenants, resumed.skipped, resumed.applied) == (2, 1, 26)
    assert await services.replay.digest() == before
    assert await store.replay_done("r") == set()  # the run is over: forgotten
    again = await services.replay.rebuild(run="r")  # a new run: every tenant
    assert again.tenants == 3
    assert await services.replay.digest() == before


async def test_replay_in_batches_of_any_size_after_any_position_gives_the_same_digest(
    services: Services,
) -> None:
    """The port's `replay` over many batches (the SQL stores decode a batch while the one
    before is written), whole or after a position, with a group changing in between."""
    alpha, *_ = await _three_tenants(services)
    build = await receiver(services, alpha, name="late")
    group = await services.groups.create(
        alpha, CreateGroup(name="late", type="t", version="1", event_receiver_ids=[build.id])
    )
    for n in range(3):
        await services.events.record_batch(alpha, [event(build.id, payload={"build": n})] * 4)
        await services.groups.patch(alpha, group.id, PatchGroup(description=f"round {n}"))
    before = await services.replay.digest()
    store = services.deps.store
    for batch, after in ((1, 0), (2, 0), (3, 7), (5, 13), (4, 20), (1000, 0)):
        async with store.rebuild(alpha.tenant_id, after) as target:
            applied = [count async for count in target.replay(alpha.tenant_id, batch)]
        assert all(count <= batch for count in applied), (batch, after)
        assert sum(applied) == 13 + 2 + 3 * 5 + 1 - after, (batch, after)
        assert await services.replay.digest() == before, (batch, after)


async def test_one_tenant_rebuilt_from_its_envelopes_gives_the_same_digest(
    services: Services,
) -> None:
    """The port's other way in (`log`, then `apply`), for one tenant with events."""
    alpha, *_ = await _three_tenants(services)
    before = await services.replay.digest()
    async with services.deps.store.rebuild(alpha.tenant_id) as target:
        async for envelopes in target.log(alpha.tenant_id, 4):
            await target.apply(alpha.tenant_id, envelopes)
    assert await services.replay.digest() == before


async def test_replaying_one_tenant_leaves_the_others_alone(services: Services) -> None:
    alpha, beta, _ = await _three_tenants(services)
    before = await services.replay.digest()
    done = await services.replay.rebuild(beta.tenant_id)
    assert (done.tenants, done.applied) == (1, 13)
    assert await services.replay.digest() == before
    async with services.deps.store.read() as tx:
        assert len(await tx.events.list(alpha.tenant_id, EventFilter(), PageRequest())) == 8


async def test_a_replay_after_a_position_redoes_only_what_the_later_entries_made(
    services: Services,
) -> None:
    alpha, *_ = await _three_tenants(services)
    before = await services.replay.digest()
    for after in (0, 1, 5, 12, 13, 40):
        done = await services.replay.rebuild(alpha.tenant_id, after=after)
        assert done.applied == max(0, 13 - after), after
        assert await services.replay.digest() == before, after
    plan = await services.replay.plan(after=10)
    assert sorted(plan.values()) == [3, 3, 3]
