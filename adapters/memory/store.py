"""The in-memory store: the reference backend for tests and the fastest one.

A write transaction holds its tenant's lock, stages what it appends and applies
it at commit without awaiting anything in between, so a failed block leaves no
trace and a reader never sees half a write. Everything lives in one process.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import TypeVar

import anyio
import msgspec

from adapters.memory.records import MemoryRecords, ReadRecords, TxRecords
from core.domain.digest import Digest
from core.domain.envelope import REGISTRY, Envelope
from core.domain.errors import Conflict, StreamVersionConflict
from core.domain.model import (
    Completion,
    DomainEvent,
    Event,
    EventRecorded,
    Group,
    GroupCompleted,
    GroupCreated,
    GroupDeleted,
    GroupModified,
    Nvrpp,
    Receiver,
    ReceiverCreated,
    SubscriptionDisabled,
    SubscriptionPinged,
    Tenant,
    TenantCreated,
    TenantModified,
    stream_of,
)
from core.ports import (
    AppendMeta,
    CompletionFilter,
    EventFilter,
    GroupFilter,
    NewEntry,
    PageRequest,
    ReceiverFilter,
)

T = TypeVar("T")


class _ReadModels:
    """Every read model of every tenant."""

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.slugs: dict[str, str] = {}
        self.receivers: dict[str, Receiver] = {}
        self.triples: dict[tuple[str, str, str, str], str] = {}
        self.events: dict[str, Event] = {}
        self.event_ids: dict[str, list[str]] = {}
        self.groups: dict[str, Group] = {}
        self.latest: dict[tuple[str, str, Nvrpp], Event] = {}
        self.completions: dict[str, Completion] = {}
        self.checkpoints: dict[str, int] = {}

    def without(self, tenants: Collection[str]) -> _ReadModels:
        """A copy without the read models of `tenants` (a rebuild starts from it)."""
        gone = set(tenants)
        kept = _ReadModels()
        kept.tenants = {k: v for k, v in self.tenants.items() if k not in gone}
        kept.slugs = {slug: k for slug, k in self.slugs.items() if k not in gone}
        kept.receivers = {k: v for k, v in self.receivers.items() if v.tenant_id not in gone}
        kept.triples = {k: v for k, v in self.triples.items() if k[0] not in gone}
        kept.events = {k: v for k, v in self.events.items() if v.tenant_id not in gone}
        kept.event_ids = {k: list(v) for k, v in self.event_ids.items() if k not in gone}
        kept.groups = {k: v for k, v in self.groups.items() if v.tenant_id not in gone}
        kept.latest = {k: v for k, v in self.latest.items() if k[0] not in gone}
        kept.completions = {k: v for k, v in self.completions.items() if v.tenant_id not in gone}
        kept.checkpoints = {k: v for k, v in self.checkpoints.items() if k not in gone}
        return kept

    def without_ids(self, made: dict[str, set[str]]) -> _ReadModels:
        """A copy without the rows of the insert-only read models that `made` names
        (`_made_by`: what some log entries made); the others are overwritten on replay."""
        kept = _ReadModels()
        kept.__dict__.update({k: type(v)(v) for k, v in self.__dict__.items()})
        kept.event_ids = {k: list(v) for k, v in self.event_ids.items()}
        for event_id in made["events"]:
            gone = kept.events.pop(event_id, None)
            if gone is not None:
                kept.event_ids[gone.tenant_id].remove(event_id)
        for receiver_id in made["receivers"]:
            gone_receiver = kept.receivers.pop(receiver_id, None)
            if gone_receiver is not None:
                r = gone_receiver
                kept.triples.pop((r.tenant_id, r.name, r.type, r.version), None)
        for completion_id in made["completions"]:
            kept.completions.pop(completion_id, None)
        return kept

    def check(self, tenant_id: str, event: DomainEvent) -> None:
        """Refuse what the unique constraints refuse, before anything is applied."""
        match event:
            case TenantCreated(tenant=t) if t.slug in self.slugs:
                raise Conflict(f"A tenant with slug {t.slug!r} exists already.")
            case ReceiverCreated(receiver=r) if (
                tenant_id,
                r.name,
                r.type,
                r.version,
            ) in self.triples:
                raise Conflict("An event receiver with this name, type and version exists already.")
            case _:
                pass

    def apply(self, tenant_id: str, position: int, event: DomainEvent) -> None:
        """The inline projection: one domain event into the read models."""
        match event:
            case TenantCreated(tenant=t) | TenantModified(tenant=t):
                self.tenants[t.id] = t
                self.slugs[t.slug] = t.id
            case ReceiverCreated(receiver=r):
                self.receivers[r.id] = r
                self.triples[(tenant_id, r.name, r.type, r.version)] = r.id
            case EventRecorded(event=e):
                self.events[e.id] = e
                bisect.insort(self.event_ids.setdefault(tenant_id, []), e.id)
                self.latest[(tenant_id, e.event_receiver_id, e.key)] = e
            case GroupCreated(group=g) | GroupModified(group=g):
                self.groups[g.id] = g
            case GroupDeleted(group=g):
                self.groups.pop(g.id, None)
            case GroupCompleted(completion=c):
                self.completions[c.id] = c
            case SubscriptionPinged() | SubscriptionDisabled():
                pass  # messages only: subscriptions keep their own tables
            case _:  # pragma: no cover - the registry knows every type
                raise TypeError(f"no projection for {event!r}")
        self.checkpoints[tenant_id] = position


class MemoryStore:
    """Store port over dictionaries; `anyio` locks serialize each tenant's writers."""

    def __init__(self, records: MemoryRecords | None = None) -> None:
        self._models = _ReadModels()
        self._logs: dict[str, list[Envelope]] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._locks: dict[str, anyio.Lock] = {}
        #: Idempotency-Key records (shared with the memory identity stores by the bootstrap).
        self.records = records if records is not None else MemoryRecords()
        self._replays: dict[str, set[str]] = {}
        self._observers: list[Callable[[str, int], None]] = []

    def on_commit(self, observer: Callable[[str, int], None]) -> None:
        """Call `observer(tenant_id, new head)` after every commit that appended (the
        commit feed, `adapters.commits.LocalFeed.committed`)."""
        self._observers.append(observer)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_ReadTx]:
        yield _ReadTx(self)

    def read_stale(self, tenant_id: str) -> AbstractAsyncContextManager[_ReadTx]:
        return self.read()

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[_WriteTx]:
        lock = self._locks.setdefault(tenant_id, anyio.Lock())
        async with lock:
            tx = _WriteTx(self, tenant_id)
            yield tx
            tx.commit()
        if tx.appended and self._observers:
            head = self._logs[tenant_id][-1].position
            for observer in self._observers:
                observer(tenant_id, head)

    @asynccontextmanager
    async def rebuild(
        self, tenant_id: str | None = None, after: int = 0
    ) -> AsyncIterator[_Rebuild]:
        if after and tenant_id is None:
            raise ValueError("a rebuild after a position is a tenant's")
        tenants = sorted(self._logs) if tenant_id is None else [tenant_id]
        async with contextlib.AsyncExitStack() as locks:
            for one in tenants:
                await locks.enter_async_context(self._locks.setdefault(one, anyio.Lock()))
            if after:
                assert tenant_id is not None
                later = self._logs.get(tenant_id, [])[after:]
                made = _made_by([REGISTRY.decode_envelope(e) for e in later])
                models = self._models.without_ids(made)
            else:
                models = self._models.without(tenants)
            target = _Rebuild(self, tenants, models, after)
            yield target
            self._models = target.models
            for run, done in target.done.items():
                self._replays.setdefault(run, set()).update(done)

    async def replay_done(self, run: str) -> set[str]:
        return set(self._replays.get(run, ()))

    async def replay_finished(self, run: str) -> None:
        self._replays.pop(run, None)

    async def purge_idempotency(self, before: datetime, limit: int) -> int:
        return self.records.purge(before, limit)

    async def close(self) -> None:
        return None


class _ReadTx:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        models = store._models
        self.tenants = _TenantReads(models)
        self.receivers = _ReceiverReads(models)
        self.events = _EventReads(models)
        self.groups = _GroupReads(models)
        self.latest = _LatestReads(models)
        self.completions = _CompletionReads(models)
        self.log = _LogReads(store)
        self.idempotency: ReadRecords | TxRecords = ReadRecords(store.records)

    async def tenant_ids(self) -> list[str]:
        return sorted(self._store._logs)

    async def digest(self) -> str:
        models = self._store._models
        digest = Digest()
        digest.section("tenants", _by_id(models.tenants.values()))
        digest.section("receivers", _by_id(models.receivers.values()))
        digest.section("events", _by_id(models.events.values()))
        digest.section("groups", _by_id(models.groups.values()))
        digest.section(
            "latest",
            sorted(
                ((t, r, msgspec.to_builtins(k), e.id) for (t, r, k), e in models.latest.items()),
                key=lambda row: (row[0], row[1], *row[2].values()),
            ),
        )
        digest.section("completions", _by_id(models.completions.values()))
        digest.section("checkpoints", sorted(models.checkpoints.items()))
        return digest.hexdigest()


class _WriteTx(_ReadTx):
    def __init__(self, store: MemoryStore, tenant_id: str) -> None:
        super().__init__(store)
        self.tenant_id = tenant_id
        self._staged: list[tuple[Envelope, DomainEvent]] = []
        self._versions: dict[str, int] = {}
        self.idempotency: TxRecords = TxRecords(store.records)

    @property
    def appended(self) -> int:
        return len(self._staged)

    async def append(self, entries: Sequence[NewEntry], meta: AppendMeta) -> list[Envelope]:
        store = self._store
        log = store._logs.get(self.tenant_id, [])
        position = (log[-1].position if log else 0) + len(self._staged)
        made = []
        for entry in entries:
            stream = stream_of(entry.event)
            current = self._versions.get(stream, store._versions.get((self.tenant_id, stream), 0))
            if entry.expected_version != current:
                raise StreamVersionConflict(
                    f"Stream {stream} is at version {current}, not {entry.expected_version}."
                )
            store._models.check(self.tenant_id, entry.event)
            self._versions[stream] = current + 1
            position += 1
            type_name, version, data = REGISTRY.encode(entry.event)
            envelope = Envelope(
                id=entry.id,
                type=type_name,
                schema_version=version,
                tenant_id=self.tenant_id,
                stream=stream,
                stream_version=current + 1,
                position=position,
                correlation_id=meta.correlation_id,
                causation_id=meta.causation_id,
                actor=meta.actor,
                occurred_at=entry.occurred_at,
                data=data,
            )
            made.append(envelope)
            self._staged.append((envelope, entry.event))
        return made

    def commit(self) -> None:
        store = self._store
        self.idempotency.check()  # before anything is applied: a clash leaves no trace
        self.idempotency.commit()
        log = store._logs.setdefault(self.tenant_id, [])
        for envelope, event in self._staged:
            log.append(envelope)
            store._models.apply(self.tenant_id, envelope.position, event)
        for stream, version in self._versions.items():
            store._versions[(self.tenant_id, stream)] = version


class _Rebuild:
    def __init__(
        self, store: MemoryStore, tenants: list[str], models: _ReadModels, after: int = 0
    ) -> None:
        self._store = store
        self._tenants = tenants
        self._after = after
        self.models = models
        self.done: dict[str, set[str]] = {}

    async def tenant_ids(self) -> list[str]:
        return list(self._tenants)

    async def replay(self, tenant_id: str, batch: int = 1000) -> AsyncIterator[int]:
        entries = self._store._logs.get(tenant_id, [])[self._after :]
        for start in range(0, len(entries), batch):
            envelopes = entries[start : start + batch]
            await self.apply(tenant_id, envelopes)
            yield len(envelopes)

    async def mark_done(self, run: str, tenant_id: str) -> None:
        self.done.setdefault(run, set()).add(tenant_id)

    async def log(self, tenant_id: str, batch: int = 1000) -> AsyncIterator[list[Envelope]]:
        entries = self._store._logs.get(tenant_id, [])
        for start in range(0, len(entries), batch):
            yield entries[start : start + batch]

    async def apply(self, tenant_id: str, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.models.apply(tenant_id, envelope.position, REGISTRY.decode_envelope(envelope))


def _made_by(events: Iterable[DomainEvent]) -> dict[str, set[str]]:
    """The ids of the rows of insert-only read models that these domain events made."""
    made: dict[str, set[str]] = {"events": set(), "receivers": set(), "completions": set()}
    for event in events:
        match event:
            case EventRecorded(event=e):
                made["events"].add(e.id)
            case ReceiverCreated(receiver=r):
                made["receivers"].add(r.id)
            case GroupCompleted(completion=c):
                made["completions"].add(c.id)
            case _:
                pass
    return made


# --- reads ---------------------------------------------------------------------------------


def _by_id(items: Iterable[T]) -> list[T]:
    return sorted(items, key=lambda item: item.id)  # type: ignore[attr-defined]


def _page_ids(
    ids: Sequence[str], get: Callable[[str], T], page: PageRequest, keep: Callable[[T], bool]
) -> list[T]:
    """Keyset pagination over ids sorted ascending: bisect to the cursor, walk in order."""
    if page.order == "desc":
        end = len(ids) if page.after is None else bisect.bisect_left(ids, page.after)
        positions: Iterable[int] = range(end - 1, -1, -1)
    else:
        start = 0 if page.after is None else bisect.bisect_right(ids, page.after)
        positions = range(start, len(ids))
    found = []
    for position in positions:
        item = get(ids[position])
        if keep(item):
            found.append(item)
            if len(found) == page.limit:
                break
    return found


def _page(items: Iterable[T], page: PageRequest, keep: Callable[[T], bool]) -> list[T]:
    """Keyset pagination over items with ids (sorted here; events keep theirs sorted)."""
    by_id: dict[str, T] = {item.id: item for item in items}  # type: ignore[attr-defined]
    return _page_ids(sorted(by_id), by_id.__getitem__, page, keep)


def _matches(item: object, **wanted: object) -> bool:
    return all(value is None or getattr(item, name) == value for name, value in wanted.items())


class _TenantReads:
    def __init__(self, models: _ReadModels) -> None:
        self._m = models

    async def get(self, tenant_id: str) -> Tenant | None:
        return self._m.tenants.get(tenant_id)

    async def by_slug(self, slug: str) -> Tenant | None:
        tenant_id = self._m.slugs.get(slug)
        return None if tenant_id is None else self._m.tenants[tenant_id]

    async def list(self, page: PageRequest) -> list[Tenant]:
        return _page(self._m.tenants.values(), page, lambda _: True)


class _ReceiverReads:
    def __init__(self, models: _ReadModels) -> None:
        self._m = models

    async def get(self, tenant_id: str, receiver_id: str) -> Receiver | None:
        receiver = self._m.receivers.get(receiver_id)
        return receiver if receiver is not None and receiver.tenant_id == tenant_id else None

    async def by_triple(
        self, tenant_id: str, name: str, type_: str, version: str
    ) -> Receiver | None:
        receiver_id = self._m.triples.get((tenant_id, name, type_, version))
        return None if receiver_id is None else self._m.receivers[receiver_id]

    async def get_many(self, tenant_id: str, receiver_ids: Collection[str]) -> dict[str, Receiver]:
        found = {}
        for receiver_id in receiver_ids:
            receiver = await self.get(tenant_id, receiver_id)
            if receiver is not None:
                found[receiver_id] = receiver
        return found

    async def list(
        self, tenant_id: str, where: ReceiverFilter, page: PageRequest
    ) -> list[Receiver]:
        return _page(
            self._m.receivers.values(),
            page,
            lambda r: (
                r.tenant_id == tenant_id
                and _matches(
                    r,
                    name=where.name,
                    type=where.type,
                    version=where.version,
                    fingerprint=where.fingerprint,
                )
            ),
        )


class _EventReads:
    def __init__(self, models: _ReadModels) -> None:
        self._m = models

    async def get(self, tenant_id: str, event_id: str) -> Event | None:
        event = self._m.events.get(event_id)
        return event if event is not None and event.tenant_id == tenant_id else None

    async def list(self, tenant_id: str, where: EventFilter, page: PageRequest) -> list[Event]:

        def keep(e: Event) -> bool:
            return (
                _matches(
                    e,
                    name=where.name,
                    version=where.version,
                    release=where.release,
                    platform_id=where.platform_id,
                    package=where.package,
                    success=where.success,
                    event_receiver_id=where.event_receiver_id,
                )
                and (where.since is None or e.created_at >= where.since)
                and (where.until is None or e.created_at < where.until)
            )

        ids = self._m.event_ids.get(tenant_id, [])
        return _page_ids(ids, self._m.events.__getitem__, page, keep)


class _GroupReads:
    def __init__(self, models: _ReadModels) -> None:
        self._m = models

    async def get(self, tenant_id: str, group_id: str) -> Group | None:
        group = self._m.groups.get(group_id)
        return group if group is not None and group.tenant_id == tenant_id else None

    async def containing(self, tenant_id: str, receiver_ids: Collection[str]) -> list[Group]:
        wanted = set(receiver_ids)
        return _by_id(
            g
            for g in self._m.groups.values()
            if g.tenant_id == tenant_id and wanted.intersection(g.event_receiver_ids)
        )

    async def list(self, tenant_id: str, where: GroupFilter, page: PageRequest) -> list[Group]:
        return _page(
            self._m.groups.values(),
            page,
            lambda g: (
                g.tenant_id == tenant_id
                and _matches(
                    g,
                    name=where.name,
                    type=where.type,
                    version=where.version,
                    enabled=where.enabled,
                )
            ),
        )


class _LatestReads:
    def __init__(self, models: _ReadModels) -> None:
        self._m = models

    async def get_many(
        self, tenant_id: str, receiver_ids: Collection[str], keys: Collection[Nvrpp]
    ) -> dict[tuple[str, Nvrpp], Event]:
        found = {}
        for receiver_id in receiver_ids:
            for key in keys:
                event = self._m.latest.get((tenant_id, receiver_id, key))
                if event is not None:
                    found[(receiver_id, key)] = event
        return found


class _CompletionReads:
    def __init__(self, models: _ReadModels) -> None:
        self._m = models

    async def list(
        self, tenant_id: str, group_id: str, where: CompletionFilter, page: PageRequest
    ) -> list[Completion]:
        return _page(
            self._m.completions.values(),
            page,
            lambda c: (
                c.tenant_id == tenant_id
                and c.group_id == group_id
                and _matches(
                    c,
                    name=where.name,
                    version=where.version,
                    release=where.release,
                    platform_id=where.platform_id,
                    package=where.package,
                )
            ),
        )


class _LogReads:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def read(self, tenant_id: str, after: int = 0, limit: int = 1000) -> list[Envelope]:
        log = self._store._logs.get(tenant_id, [])
        return log[after : after + limit]

    async def read_stream(self, tenant_id: str, stream: str) -> list[Envelope]:
        return [e for e in self._store._logs.get(tenant_id, []) if e.stream == stream]

    async def stream_version(self, tenant_id: str, stream: str) -> int:
        return self._store._versions.get((tenant_id, stream), 0)

    async def head(self, tenant_id: str) -> int:
        log = self._store._logs.get(tenant_id, [])
        return log[-1].position if log else 0

    async def heads(self) -> dict[str, int]:
        return {tenant: log[-1].position for tenant, log in self._store._logs.items() if log}

    async def checkpoint(self, tenant_id: str) -> int:
        return self._store._models.checkpoints.get(tenant_id, 0)
