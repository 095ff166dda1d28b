"""Messages from the log, on every backend: what subscribers receive, in log order, resumable."""

from __future__ import annotations

import pytest

from core.domain.commands import CreateGroup
from core.domain.errors import Invalid
from core.domain.messages import (
    TYPE_GROUP_COMPLETED,
    TYPE_GROUP_CREATED,
    TYPE_RECEIVER_CREATED,
    decode_message,
    encode_message,
)
from core.usecases import Services
from core.usecases.messages import MessageFilter
from tests.contract.test_usecases import actor, event, receiver

pytestmark = pytest.mark.anyio


async def test_messages_follow_the_log_and_resume_from_any_position(services: Services) -> None:
    who = await actor(services)
    start = await services.messages.head(who)
    a = await receiver(services, who, name="a", type="ci.build")
    b = await receiver(services, who, name="b", type="ci.test")
    group = await services.groups.create(
        who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[a.id, b.id])
    )
    first = await services.events.record(who, event(a.id))
    second = await services.events.record(who, event(b.id))

    page = await services.messages.after(who, start)
    kinds = [(p.message.type, p.message.subject) for p in page.messages]
    assert kinds == [
        (TYPE_RECEIVER_CREATED, a.id),
        (TYPE_RECEIVER_CREATED, b.id),
        (TYPE_GROUP_CREATED, group.id),
        ("ci.build", a.id),
        ("ci.test", b.id),
        (TYPE_GROUP_COMPLETED, group.id),
    ]
    positions = [p.position for p in page.messages]
    assert positions == sorted(positions)
    assert page.last == positions[-1] == await services.messages.head(who)
    recorded = page.messages[3].message
    assert recorded.data.events == [first]
    assert recorded.data.event_receivers == [a]
    assert (recorded.success, recorded.tenant, recorded.source) == (
        True,
        "acme",
        "/waypost/tenants/acme",
    )
    completed = page.messages[5].message
    assert [e.id for e in completed.data.events] == [second.id, first.id]  # the trigger first
    assert decode_message(encode_message(completed)) == completed
    assert len({p.message.id for p in page.messages}) == len(page.messages)

    # resuming from any position gives the rest, the same messages (same ids)
    middle = positions[2]
    rest = await services.messages.after(who, middle)
    assert rest.messages == page.messages[3:]
    # a small limit reads a few entries at a time and says where it stopped
    step = await services.messages.after(who, start, limit=2)
    assert step.messages == page.messages[:2]
    assert step.last == positions[1]
    # nothing new: an empty page that stays where it was
    assert await services.messages.after(who, page.last) == type(page)(messages=[], last=page.last)


async def test_a_tenant_reads_only_its_own_messages(services: Services) -> None:
    acme, globex = await actor(services, "acme"), await actor(services, "globex")
    mine = await receiver(services, acme, name="mine")
    await receiver(services, globex, name="theirs")
    await services.events.record(acme, event(mine.id))
    seen = await services.messages.after(globex, 0)
    assert [p.message.tenant for p in seen.messages] == ["globex"]
    assert all(mine.id not in p.message.subject for p in seen.messages)


async def test_a_bad_position_or_limit_is_refused(services: Services) -> None:
    who = await actor(services)
    with pytest.raises(Invalid):
        await services.messages.after(who, -1)
    for limit in (0, 1001):
        with pytest.raises(Invalid):
            await services.messages.after(who, 0, limit=limit)


async def test_a_filtered_page_keeps_what_matches_and_reads_past_the_rest(
    services: Services,
) -> None:
    who = await actor(services)
    start = await services.messages.head(who)
    a = await receiver(services, who, name="a", type="ci.build")
    b = await receiver(services, who, name="b", type="ci.test")
    await services.events.record(who, event(a.id))
    await services.events.record(who, event(b.id))
    every = await services.messages.after(who, start)

    builds = await services.messages.after(
        who, start, only=MessageFilter(types=frozenset({"ci.build"}))
    )
    assert builds.messages == [p for p in every.messages if p.message.type == "ci.build"]
    assert builds.last == every.last  # read past what it left out
    about_b = await services.messages.after(
        who, start, only=MessageFilter(subjects=frozenset({b.id}))
    )
    assert [(p.message.type, p.message.subject) for p in about_b.messages] == [
        (TYPE_RECEIVER_CREATED, b.id),
        ("ci.test", b.id),
    ]
    both = MessageFilter(types=frozenset({"ci.build"}), subjects=frozenset({b.id}))
    nothing = await services.messages.after(who, start, only=both)
    assert (nothing.messages, nothing.last) == ([], every.last)
