"""No N+1: a page of 100 events with their receivers, or of groups with their members, costs
the same few store calls as a page of one.

The store is the real in-memory one behind a counter of every read-model call; the
receivers' cache is emptied before each query, so that every receiver must come from the
store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from adapters.memory.cache import ReceiverLru
from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from core.ports import ReadTx, Rebuild, WriteTx
from tests.gql.conftest import gql
from tests.http.conftest import (
    HEADERS,
    Client,
    add_tenants,
    asgi_client,
    event_body,
    make_app,
    make_receiver,
    services_of,
)

pytestmark = pytest.mark.anyio


class _Counted:
    """A read model whose every method call is counted as `<model>.<method>`."""

    def __init__(self, inner: Any, name: str, calls: Counter[str]) -> None:
        self._inner, self._name, self._calls = inner, name, calls

    def __getattr__(self, method: str) -> Any:
        found = getattr(self._inner, method)
        if not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[f"{self._name}.{method}"] += 1
            return found(*args, **kwargs)

        return counted


class _CountedTx:
    def __init__(self, inner: Any, calls: Counter[str]) -> None:
        self._inner, self._calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name in {"tenants", "receivers", "events", "groups", "latest", "completions", "log"}:
            return _Counted(found, name, self._calls)
        return found


class CountingStore:
    """A MemoryStore that counts read transactions (fresh or stale) and read-model calls."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.calls: Counter[str] = Counter()

    @asynccontextmanager
    async def _counted(self, opened: AbstractAsyncContextManager[ReadTx]) -> AsyncIterator[ReadTx]:
        self.calls["read"] += 1
        async with opened as tx:
            yield _CountedTx(tx, self.calls)

    def read(self) -> AbstractAsyncContextManager[ReadTx]:
        return self._counted(self.inner.read())

    def read_stale(self, tenant_id: str) -> AbstractAsyncContextManager[ReadTx]:
        return self._counted(self.inner.read_stale(tenant_id))

    def write(self, tenant_id: str) -> AbstractAsyncContextManager[WriteTx]:
        return self.inner.write(tenant_id)

    def rebuild(
        self, tenant_id: str | None = None, after: int = 0
    ) -> AbstractAsyncContextManager[Rebuild]:
        return self.inner.rebuild(tenant_id, after)

    async def replay_done(self, run: str) -> set[str]:
        return await self.inner.replay_done(run)

    async def replay_finished(self, run: str) -> None:
        await self.inner.replay_finished(run)

    async def close(self) -> None:
        await self.inner.close()

    def take(self) -> Counter[str]:
        taken = Counter(self.calls)
        self.calls.clear()
        return taken


@pytest.fixture
async def counted(identity: MemoryIdentity) -> AsyncIterator[tuple[Client, CountingStore]]:
    store = CountingStore()
    app = make_app(identity, store=store)
    async with asgi_client(app) as client:
        await add_tenants(client, identity)
        client.app = app  # type: ignore[attr-defined]
        yield client, store


def forget_receivers(client: Client) -> None:
    services_of(client.app).deps.receivers = ReceiverLru()  # type: ignore[attr-defined]


async def fill(client: Client, receivers: int, events: int) -> list[str]:
    ids = [await make_receiver(client, name=f"r{n}") for n in range(receivers)]
    batch = [event_body(ids[n % receivers], release=str(n)) for n in range(events)]
    answer = await client.post("/api/v1/events/batch", json={"events": batch}, headers=HEADERS)
    assert answer.status_code == 201, answer.text
    return ids


@pytest.mark.parametrize(
    "query",
    [
        "{ events_page(limit: 100) { items { id event_receiver { id name type } } } }",
        '{ events(event: {name: "app"}) { id event_receiver { id name } } }',
    ],
    ids=["page", "epr-search"],
)
async def test_a_hundred_events_with_their_receivers_are_two_reads(
    counted: tuple[Client, CountingStore], query: str
) -> None:
    client, store = counted
    await fill(client, receivers=25, events=100)
    for _ in range(2):  # the first time, and again with the document cached
        forget_receivers(client)
        store.take()
        answer = await gql(client, query)
        assert "errors" not in answer, answer
        items = next(iter(answer["data"].values()))
        items = items["items"] if isinstance(items, dict) else items
        assert len(items) == 100
        assert len({item["event_receiver"]["id"] for item in items}) == 25
        calls = store.take()
        assert calls["events.list"] == 1, calls
        assert calls["receivers.get_many"] == 1, calls  # one batch for 25 distinct receivers
        assert calls["receivers.get"] == 0, calls
        assert calls["read"] == 2, calls


async def test_groups_with_their_members_are_two_reads(
    counted: tuple[Client, CountingStore],
) -> None:
    client, store = counted
    receivers = [await make_receiver(client, name=f"m{n}") for n in range(30)]
    for n in range(20):
        members = [receivers[(n + k) % 30] for k in range(5)]
        made = await client.post(
            "/api/v1/groups",
            json={"name": f"g{n}", "type": "gate", "version": "1", "event_receiver_ids": members},
            headers=HEADERS,
        )
        assert made.status_code == 201
    forget_receivers(client)
    store.take()
    answer = await gql(
        client,
        "{ event_receiver_groups_page(limit: 20) { items { id event_receivers { id name } } } }",
    )
    groups = answer["data"]["event_receiver_groups_page"]["items"]
    assert len(groups) == 20
    assert all(len(g["event_receivers"]) == 5 for g in groups)
    calls = store.take()
    assert calls["groups.list"] == 1, calls
    assert calls["receivers.get_many"] == 1, calls
    assert calls["read"] == 2, calls


async def test_receivers_in_the_cache_cost_no_read(counted: tuple[Client, CountingStore]) -> None:
    client, store = counted
    await fill(client, receivers=5, events=10)
    store.take()
    answer = await gql(client, "{ events_page(limit: 10) { items { event_receiver { id } } } }")
    assert len(answer["data"]["events_page"]["items"]) == 10
    calls = store.take()
    assert calls["read"] == 1, calls  # the recording put every receiver in the cache
    assert calls["receivers.get_many"] == 0, calls
