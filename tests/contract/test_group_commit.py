"""Group commit through the use cases, on every backend: requests that arrive together share
a transaction and are judged exactly as if recorded one at a time, in arrival order."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.system import UlidSource
from core.domain.commands import CreateGroup, CreateTenant, RecordEvent, RegisterReceiver
from core.domain.envelope import REGISTRY
from core.domain.errors import Invalid
from core.domain.groupcommit import GroupPolicy
from core.domain.groups import decide_record
from core.domain.idempotency import AlreadyAnswered, Answer, Claim, KeyReused, fingerprint
from core.domain.model import Event, EventRecorded, Group, GroupCompleted, Nvrpp
from core.ports import AppendMeta, Store, Unavailable, WriteTx
from core.usecases import Actor, Deps, Recorded, Services
from core.usecases.common import Once
from tests.contract.conftest import StepClock

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}
KEYS = [
    Nvrpp(name="app", version="1.0", release="1", platform_id="x86_64", package="rpm"),
    Nvrpp(name="app", version="2.0", release="1", platform_id="x86_64", package="rpm"),
]
RECEIVERS = 3
UNKNOWN = RECEIVERS  # a receiver index that names no receiver: the request is refused
_slugs = itertools.count()


class Watched:
    """The Combiner, watched: the order in which writes arrive (by correlation id) and the
    size of every group it runs."""

    def __init__(self, policy: GroupPolicy | None = None) -> None:
        self.inner = Lanes(policy)
        self.arrivals: list[str] = []
        self.groups: list[int] = []

    async def submit(
        self,
        key: str,
        write: Any,
        size: int,
        run: Callable[[Sequence[Any]], Awaitable[Sequence[Any]]],
    ) -> Any:
        self.arrivals.append(write.actor.correlation_id)

        async def counted(writes: Sequence[Any]) -> Sequence[Any]:
            self.groups.append(len(writes))
            return await run(writes)

        return await self.inner.submit(key, write, size, counted)


def services_over(store: Store, combiner: Any) -> Services:
    return Services(Deps(store, StepClock(), UlidSource(), ReceiverLru(), combiner=combiner))


async def new_tenant(services: Services) -> Actor:
    slug = f"gc-{next(_slugs)}"
    tenant = await services.tenants.create(
        CreateTenant(slug=slug, name=slug), AppendMeta(actor="root")
    )
    return Actor(tenant_id=tenant.id, principal="tester")


def command(receiver_id: str, key: Nvrpp, success: bool, valid: bool = True) -> RecordEvent:
    return RecordEvent(
        name=key.name,
        version=key.version,
        release=key.release,
        platform_id=key.platform_id,
        package=key.package,
        payload={"build": 1} if valid else {"build": "not a number"},
        success=success,
        event_receiver_id=receiver_id,
    )


# --- the property: combined requests decide like one-at-a-time ------------------------------

event_spec = st.tuples(
    st.integers(0, RECEIVERS),  # receiver index (UNKNOWN: refused)
    st.integers(0, len(KEYS) - 1),  # key
    st.booleans(),  # success
    st.integers(0, 9).map(lambda n: n > 0),  # payload valid (one time in ten it is not)
)
request_spec = st.tuples(
    st.booleans(),  # a batch (else a single event)
    st.lists(event_spec, min_size=1, max_size=4),
)
group_spec = st.tuples(
    st.sets(st.integers(0, RECEIVERS - 1), min_size=1, max_size=RECEIVERS),
    st.integers(0, 4).map(lambda n: n > 0),  # enabled
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.lists(group_spec, max_size=3),
    waves=st.lists(st.lists(request_spec, min_size=1, max_size=6), min_size=1, max_size=4),
)
async def test_requests_arriving_together_decide_like_one_at_a_time(
    store: Store,
    groups: list[tuple[set[int], bool]],
    waves: list[list[tuple[bool, list[tuple[int, int, bool, bool]]]]],
) -> None:
    watched = Watched()
    services = services_over(store, watched)
    who = await new_tenant(services)
    receivers = []
    for index in range(RECEIVERS):
        receiver, _ = await services.receivers.register(
            who, RegisterReceiver(name=f"r{index}", type="t", version="1", schema=SCHEMA)
        )
        receivers.append(receiver.id)
    made: list[Group] = [
        await services.groups.create(
            who,
            CreateGroup(
                name=f"g{n}",
                type="t",
                version="1",
                event_receiver_ids=[receivers[i] for i in sorted(members)],
                enabled=enabled,
            ),
        )
        for n, (members, enabled) in enumerate(groups)
    ]
    async with store.read() as tx:
        setup = await tx.log.head(who.tenant_id)
    ids = [*receivers, "01J00000000000000000NOSUCH0"]
    await services.deps.receivers_by_id(who.tenant_id, receivers)  # nothing suspends below

    # The oracle's state: every receiver's latest event per key, one request at a time.
    latest: dict[tuple[str, Nvrpp], Event] = {}
    expected_log: list[tuple[str, str, tuple[str, ...]]] = []  # (correlation, kind, what)
    seen: list[tuple[str, str, tuple[str, ...]]] = []
    for w, wave in enumerate(waves):
        watched.arrivals.clear()
        watched.groups.clear()
        outcomes: dict[str, Recorded | Exception] = {}
        refused: set[str] = set()
        async with anyio.create_task_group() as tg:  # all arrive in the same turn of the loop
            for r, (batch, given_specs) in enumerate(wave):
                name = f"w{w}-r{r}"
                specs = given_specs if batch else given_specs[:1]
                cmds = [command(ids[i], KEYS[k], ok, valid) for i, k, ok, valid in specs]
                if any(i == UNKNOWN or not valid for i, _, _, valid in specs):
                    refused.add(name)
                actor = Actor(tenant_id=who.tenant_id, principal="tester", correlation_id=name)
                tg.start_soon(send, services, actor, batch, cmds, outcomes)

        # Refused requests were refused before combining: they never arrived, and nobody
        # else failed for them.
        assert refused == {n for n, o in outcomes.items() if isinstance(o, Exception)}
        accepted = list(watched.arrivals)
        assert not refused & set(accepted)
        assert sorted(accepted) == sorted(set(outcomes) - refused)
        # Arriving in one turn of the loop, they shared one transaction.
        assert watched.groups == ([len(accepted)] if accepted else [])

        # The oracle: each accepted request alone, in arrival order.
        for name in accepted:
            answer = outcomes[name]
            assert isinstance(answer, Recorded)
            decided = decide_record(answer.events, made, latest, new_id=lambda: "-")
            fired = [d.completion for d in decided if isinstance(d, GroupCompleted)]
            assert [_completion(c) for c in answer.completions] == [_completion(c) for c in fired]
            for event in answer.events:
                latest[(event.event_receiver_id, event.key)] = event
            for d in decided:
                if isinstance(d, EventRecorded):
                    expected_log.append((name, "event", (d.event.id,)))
                else:
                    assert isinstance(d, GroupCompleted)
                    expected_log.append((name, "completion", _completion(d.completion)))

    async with store.read() as tx:
        log = await tx.log.read(who.tenant_id, after=setup, limit=10_000)
        head = await tx.log.head(who.tenant_id)
        checkpoint = await tx.log.checkpoint(who.tenant_id)
    assert [e.position for e in log] == list(range(setup + 1, head + 1))  # gap-free
    assert checkpoint == head
    for envelope in log:
        entry = REGISTRY.decode_envelope(envelope)
        assert envelope.correlation_id is not None
        if isinstance(entry, EventRecorded):
            seen.append((envelope.correlation_id, "event", (entry.event.id,)))
        else:
            assert isinstance(entry, GroupCompleted)
            seen.append((envelope.correlation_id, "completion", _completion(entry.completion)))
    assert seen == expected_log


mostly_valid_event_spec = st.tuples(
    st.integers(0, 9).map(lambda n: UNKNOWN if n == 0 else n % RECEIVERS),  # receiver index
    st.integers(0, len(KEYS) - 1),  # key
    st.booleans(),  # success
    st.integers(0, 19).map(lambda n: n > 0),  # payload valid
)
interleaved_spec = st.tuples(
    st.integers(0, 3),  # turns of the event loop the request waits before it is sent
    st.booleans(),  # a batch (else a single event)
    st.lists(mostly_valid_event_spec, min_size=1, max_size=3),
    st.none() | st.integers(0, 2),  # its Idempotency-Key (a few, so that they repeat)
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    groups=st.lists(group_spec, max_size=2),
    requests=st.lists(interleaved_spec, min_size=1, max_size=10),
    max_writes=st.integers(1, 4),
    max_events=st.sampled_from([2, 5, 1000]),
)
async def test_interleaved_requests_with_keys_decide_like_one_at_a_time(
    store: Store,
    groups: list[tuple[set[int], bool]],
    requests: list[tuple[int, bool, list[tuple[int, int, bool, bool]], int | None]],
    max_writes: int,
    max_events: int,
) -> None:
    """Requests (singles and batches, some with Idempotency-Keys that repeat) that arrive
    at random moments: while the tenant is idle, while a group gathers, while one commits;
    groups bounded by a random policy. Whatever groups form, every answer, completion, log
    entry and record is what recording them one at a time, in arrival order, gives: a key
    seen before replays the first answer and records nothing."""
    watched = Watched(GroupPolicy(max_writes=max_writes, max_events=max_events))
    services = services_over(store, watched)
    who = await new_tenant(services)
    receivers = []
    for index in range(RECEIVERS):
        receiver, _ = await services.receivers.register(
            who, RegisterReceiver(name=f"r{index}", type="t", version="1", schema=SCHEMA)
        )
        receivers.append(receiver.id)
    made: list[Group] = [
        await services.groups.create(
            who,
            CreateGroup(
                name=f"g{n}",
                type="t",
                version="1",
                event_receiver_ids=[receivers[i] for i in sorted(members)],
                enabled=enabled,
            ),
        )
        for n, (members, enabled) in enumerate(groups)
    ]
    async with store.read() as tx:
        setup = await tx.log.head(who.tenant_id)
    ids = [*receivers, "01J00000000000000000NOSUCH0"]
    await services.deps.receivers_by_id(who.tenant_id, receivers)

    # A key always comes with the same request (the first that used it): a retry.
    by_key: dict[int, tuple[bool, list[tuple[int, int, bool, bool]]]] = {}
    outcomes: dict[str, Recorded | Exception] = {}

    async def one(name: str, delay: int, batch: bool, specs: list[Any], key: int | None) -> None:
        for _ in range(delay):
            await anyio.lowlevel.checkpoint()
        if key is not None:
            batch, specs = by_key.setdefault(key, (batch, specs))
        specs = specs if batch else specs[:1]
        cmds = [command(ids[i], KEYS[k], ok, valid) for i, k, ok, valid in specs]
        actor = Actor(tenant_id=who.tenant_id, principal="tester", correlation_id=name)
        once = None if key is None else claim(who, f"key-{key}", repr((batch, specs)))
        try:
            if batch:
                outcomes[name] = await services.events.record_batch_outcome(actor, cmds, once)
            else:
                outcomes[name] = await services.events.record_outcome(actor, cmds[0], once)
        except (Invalid, AlreadyAnswered) as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        for r, (delay, batch, specs, key) in enumerate(requests):
            tg.start_soon(one, f"r{r}", delay, batch, specs, key)

    # Groups as the policy bounds them, covering every accepted request once, in order.
    accepted = list(watched.arrivals)
    assert sum(watched.groups) == len(accepted)
    assert all(1 <= size <= max(max_writes, 1) for size in watched.groups)
    refused = {n for n, o in outcomes.items() if isinstance(o, Invalid)}
    assert not refused & set(accepted)
    assert sorted(accepted) == sorted(set(outcomes) - refused)

    # The oracle: each accepted request alone, in arrival order.
    latest: dict[tuple[str, Nvrpp], Event] = {}
    answered: dict[str, Answer] = {}  # key -> the first answer
    expected_log: list[tuple[str, str, tuple[str, ...]]] = []
    keys_of = {f"r{r}": key for r, (_, _, _, key) in enumerate(requests)}
    for name in accepted:
        answer = outcomes[name]
        key = keys_of[name]
        if key is not None and f"key-{key}" in answered:
            assert isinstance(answer, AlreadyAnswered), name
            assert answer.answer == answered[f"key-{key}"]
            continue
        assert isinstance(answer, Recorded), (name, answer)
        if key is not None:
            body = ",".join(e.id for e in answer.events).encode()
            answered[f"key-{key}"] = Answer(status=201, body=body)
        decided = decide_record(answer.events, made, latest, new_id=lambda: "-")
        fired = [d.completion for d in decided if isinstance(d, GroupCompleted)]
        assert [_completion(c) for c in answer.completions] == [_completion(c) for c in fired]
        for event in answer.events:
            latest[(event.event_receiver_id, event.key)] = event
        for d in decided:
            if isinstance(d, EventRecorded):
                expected_log.append((name, "event", (d.event.id,)))
            else:
                assert isinstance(d, GroupCompleted)
                expected_log.append((name, "completion", _completion(d.completion)))

    async with store.read() as tx:
        log = await tx.log.read(who.tenant_id, after=setup, limit=10_000)
        head = await tx.log.head(who.tenant_id)
        checkpoint = await tx.log.checkpoint(who.tenant_id)
    assert [e.position for e in log] == list(range(setup + 1, head + 1))  # gap-free
    assert checkpoint == head
    seen: list[tuple[str, str, tuple[str, ...]]] = []
    for envelope in log:
        entry = REGISTRY.decode_envelope(envelope)
        assert envelope.correlation_id is not None
        if isinstance(entry, EventRecorded):
            seen.append((envelope.correlation_id, "event", (entry.event.id,)))
        else:
            assert isinstance(entry, GroupCompleted)
            seen.append((envelope.correlation_id, "completion", _completion(entry.completion)))
    assert seen == expected_log
    # exactly the keys whose first request was recorded hold a record: its first answer
    assert await stored_records(store, who, [f"key-{k}" for k in range(3)]) == answered


async def send(
    services: Services,
    actor: Actor,
    batch: bool,
    cmds: list[RecordEvent],
    outcomes: dict[str, Recorded | Exception],
) -> None:
    """Record one request; its answer (or its refusal) under its correlation id."""
    assert actor.correlation_id is not None
    try:
        if batch:
            outcomes[actor.correlation_id] = await services.events.record_batch_outcome(actor, cmds)
        else:
            outcomes[actor.correlation_id] = await services.events.record_outcome(actor, cmds[0])
    except Invalid as exc:
        outcomes[actor.correlation_id] = exc


def _completion(c: Any) -> tuple[str, ...]:
    """A completion without its id (the oracle makes its own)."""
    return (c.group_id, *msgspec.structs.astuple(c.key), c.triggering_event_id, *c.member_event_ids)


# --- failures: a failing transaction fails only its members ----------------------------------


def claim(who: Actor, key: str, body: str) -> Once[Recorded]:
    """An Idempotency-Key's claim whose answer names the recorded events."""

    def render(recorded: Recorded) -> Answer:
        return Answer(status=201, body=",".join(e.id for e in recorded.events).encode())

    return Once(Claim(who.tenant_id, key, fingerprint([body.encode()])), render)


async def stored_records(store: Store, who: Actor, keys: Sequence[str]) -> dict[str, Answer]:
    async with store.read() as tx:
        found = {k: await tx.idempotency.get(who.tenant_id, k) for k in keys}
    return {k: r.answer for k, r in found.items() if r is not None}


async def recorded_ids(store: Store, who: Actor) -> list[tuple[str | None, str]]:
    """(correlation id, event id) of every recorded event in the tenant's log, in order."""
    async with store.read() as tx:
        log = await tx.log.read(who.tenant_id)
    return [
        (e.correlation_id, entry.event.id)
        for e in log
        if isinstance(entry := REGISTRY.decode_envelope(e), EventRecorded)
    ]


async def test_a_member_that_breaks_the_transaction_fails_alone(store: Store) -> None:
    """Members with Idempotency-Keys in one group: a key reused for another request breaks
    the group's transaction (the record's unique key) before its commit; each member is
    then made alone and gets what it would have had alone: a replay the first answer, the
    reused key its 422, the others their events, each with its record committed with them."""
    watched = Watched()
    services = services_over(store, watched)
    who = await new_tenant(services)
    receiver, _ = await services.receivers.register(
        who, RegisterReceiver(name="r", type="t", version="1", schema=SCHEMA)
    )
    await services.deps.receivers_by_id(who.tenant_id, [receiver.id])
    first_actor = Actor(tenant_id=who.tenant_id, principal="tester", correlation_id="first")
    first = await services.events.record_outcome(
        first_actor, command(receiver.id, KEYS[0], True), claim(who, "k-first", "body-1")
    )
    [first_answer] = (await stored_records(store, who, ["k-first"])).values()
    assert watched.groups == [1]
    watched.groups.clear()

    claims = {
        "a": claim(who, "k-a", "body-a"),
        "replay": claim(who, "k-first", "body-1"),  # the same request again
        "reused": claim(who, "k-first", "body-2"),  # the key, another request
        "c": None,  # no key at all
        "twin": claim(who, "k-a", "body-a"),  # "a" again, in the same group
    }
    outcomes: dict[str, Recorded | Exception] = {}

    async def send(name: str) -> None:
        actor = Actor(tenant_id=who.tenant_id, principal="tester", correlation_id=name)
        try:
            outcomes[name] = await services.events.record_outcome(
                actor, command(receiver.id, KEYS[0], True), claims[name]
            )
        except (AlreadyAnswered, KeyReused) as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        for name in claims:
            tg.start_soon(send, name)

    # one combined transaction failed before its commit; then each member alone
    assert watched.groups[0] == 5
    assert all(size == 1 for size in watched.groups[1:])
    replayed, reused, twin = outcomes["replay"], outcomes["reused"], outcomes["twin"]
    assert isinstance(replayed, AlreadyAnswered)
    assert replayed.answer == first_answer
    assert isinstance(reused, KeyReused)
    a, c = outcomes["a"], outcomes["c"]
    assert isinstance(a, Recorded)
    assert isinstance(c, Recorded)
    assert isinstance(twin, AlreadyAnswered)  # "a" committed first: its answer, again
    assert twin.answer == Answer(status=201, body=a.events[0].id.encode())
    # exactly the events of first, a and c, each once; their records, with their answers
    assert await recorded_ids(store, who) == [
        ("first", first.events[0].id),
        ("a", a.events[0].id),
        ("c", c.events[0].id),
    ]
    assert await stored_records(store, who, ["k-first", "k-a"]) == {
        "k-first": first_answer,
        "k-a": Answer(status=201, body=a.events[0].id.encode()),
    }


class Delegating:
    """A store that hands everything to `inner` (the tests below change `write`)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.writes = 0

    def read(self) -> Any:
        return self.inner.read()

    def read_stale(self, tenant_id: str) -> Any:
        return self.inner.read_stale(tenant_id)

    def write(self, tenant_id: str) -> Any:
        return self.inner.write(tenant_id)

    def rebuild(self, tenant_id: str | None = None, after: int = 0) -> Any:
        return self.inner.rebuild(tenant_id, after)

    async def replay_done(self, run: str) -> set[str]:
        return await self.inner.replay_done(run)

    async def replay_finished(self, run: str) -> None:
        await self.inner.replay_finished(run)

    async def purge_idempotency(self, before: datetime, limit: int) -> int:
        return await self.inner.purge_idempotency(before, limit)

    async def close(self) -> None:
        await self.inner.close()


class CommitFails(Delegating):
    """A store whose write transactions fail at their commit (and roll back)."""

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[WriteTx]:
        self.writes += 1
        async with self.inner.write(tenant_id) as tx:
            yield tx
            raise ConnectionResetError("the connection went away during COMMIT")


async def test_a_group_whose_commit_fails_is_never_retried(store: Store) -> None:
    services = services_over(store, Lanes())
    who = await new_tenant(services)
    receiver, _ = await services.receivers.register(
        who, RegisterReceiver(name="r", type="t", version="1", schema=SCHEMA)
    )
    failing = CommitFails(store)
    watched = Watched()
    broken = services_over(failing, watched)
    await broken.deps.receivers_by_id(who.tenant_id, [receiver.id])
    errors: list[BaseException] = []

    async def send(n: int) -> None:
        actor = Actor(tenant_id=who.tenant_id, principal="tester", correlation_id=f"r{n}")
        try:
            await broken.events.record(actor, command(receiver.id, KEYS[0], True))
        except (ConnectionResetError, Unavailable) as exc:  # SQL stores: the latter
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(send, n)
    # The outcome of a failed commit is unknown: a retry could record twice. Every member
    # gets the error; there was exactly one transaction.
    assert watched.groups == [4]
    assert failing.writes == 1
    assert len(errors) == 4
    async with store.read() as tx:
        assert [e.type for e in await tx.log.read(who.tenant_id)] == [
            "tenant.created",
            "receiver.created",
        ]


class BeginFails(Delegating):
    """A store whose write transactions cannot begin: a lock that never comes, or (what the
    SQL stores raise, answered 503) a database that is down."""

    def __init__(self, inner: Store, error: Exception) -> None:
        super().__init__(inner)
        self.error = error

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[WriteTx]:
        self.writes += 1
        if self.writes:  # always: the transaction never begins
            raise self.error
        async with self.inner.write(tenant_id) as tx:  # pragma: no cover - never reached
            yield tx


@pytest.mark.parametrize(
    "error",
    [TimeoutError("the writer lock stayed taken"), Unavailable("the database", "it is down")],
)
async def test_a_group_that_cannot_begin_fails_at_once_without_retries(
    store: Store, error: Exception
) -> None:
    services = services_over(store, Lanes())
    who = await new_tenant(services)
    receiver, _ = await services.receivers.register(
        who, RegisterReceiver(name="r", type="t", version="1", schema=SCHEMA)
    )
    failing = BeginFails(store, error)
    watched = Watched()
    broken = services_over(failing, watched)
    await broken.deps.receivers_by_id(who.tenant_id, [receiver.id])
    errors: list[BaseException] = []

    async def send() -> None:
        try:
            await broken.events.record(who, command(receiver.id, KEYS[0], True))
        except (TimeoutError, Unavailable) as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(send)
    # Nobody is to blame and each alone would wait as long again: one attempt, five errors.
    assert watched.groups == [5]
    assert failing.writes == 1
    assert errors == [error] * 5


async def test_a_lone_request_commits_alone_at_once(store: Store) -> None:
    watched = Watched()
    services = services_over(store, watched)
    who = await new_tenant(services)
    receiver, _ = await services.receivers.register(
        who, RegisterReceiver(name="r", type="t", version="1", schema=SCHEMA)
    )
    for _ in range(3):
        await services.events.record(who, command(receiver.id, KEYS[0], True))
    assert watched.groups == [1, 1, 1]


async def test_group_size_is_bounded_by_the_policy(store: Store) -> None:
    watched = Watched(GroupPolicy(max_writes=3, max_events=1000))
    services = services_over(store, watched)
    who = await new_tenant(services)
    receiver, _ = await services.receivers.register(
        who, RegisterReceiver(name="r", type="t", version="1", schema=SCHEMA)
    )
    await services.deps.receivers_by_id(who.tenant_id, [receiver.id])
    async with anyio.create_task_group() as tg:
        for _ in range(7):
            tg.start_soon(services.events.record, who, command(receiver.id, KEYS[0], True))
    assert watched.groups == [3, 3, 1]
    async with store.read() as tx:
        assert await tx.log.head(who.tenant_id) == 2 + 7
