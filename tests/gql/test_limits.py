"""Depth, cost, token and size limits refuse an abusive query with a clear error, before any
resolver runs (no store call at all), and quickly: the refusals are timed and printed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from graphql import get_introspection_query, parse

from adapters.memory.identity import MemoryIdentity
from entrypoints.http.gql import limits
from entrypoints.http.gql.schema import executable_schema
from entrypoints.settings import GraphQLSettings
from tests.gql.conftest import codes, gql
from tests.gql.test_batching import CountingStore
from tests.http.conftest import Client, add_tenants, asgi_client, make_app, settings

pytestmark = pytest.mark.anyio

SCHEMA = executable_schema()
DEFAULTS = GraphQLSettings()


@pytest.fixture
async def limited(identity: MemoryIdentity) -> AsyncIterator[tuple[Client, CountingStore]]:
    store = CountingStore()
    app = make_app(identity, store=store, config=settings(graphql=GraphQLSettings(max_depth=4)))
    async with asgi_client(app) as client:
        await add_tenants(client, identity)
        store.take()
        yield client, store


def beyond_authentication(store: CountingStore) -> dict[str, int]:
    """The store calls since the last look, less authentication's (its tenant, when that is
    not in the identity cache): what the query itself cost."""
    calls = store.take()
    calls["read"] -= calls.pop("tenants.get", 0)
    return {name: count for name, count in calls.items() if count}


def cost(query: str, variables: dict[str, object] | None = None) -> int:
    return limits.measure(SCHEMA, parse(query), None, variables)[1]


def test_the_cost_of_a_query_is_the_most_values_it_can_return() -> None:
    assert cost("{ events_by_id(id: 1) { id name } }") == 1 + 2
    assert cost("{ events(event: {}) { id name } }") == 1 + 1000 * 2
    assert cost("{ events_page { items { id } next_cursor } }") == 1 + (1 + 50 * 1) + 1
    assert cost("{ events_page(limit: 200) { items { id } } }") == 1 + (1 + 200)
    assert cost("query ($n: Int) { events_page(limit: $n) { items { id } } }", {"n": 7}) == 9
    assert cost("{ events_page(limit: 99999) { items { id } } }") == 1 + (1 + 1000)
    nested = "{ events_page(limit: 10) { items { id event_receiver { id name } } } }"
    assert cost(nested) == 1 + (1 + 10 * (1 + (1 + 2)))
    groups = "{ event_receiver_groups_page(limit: 2) { items { event_receivers { id } } } }"
    assert cost(groups) == 1 + (1 + 2 * (1 + 100 * 1))
    fragment = "{ ...F ...F } fragment F on Query { events_page(limit: 3) { items { id } } }"
    assert cost(fragment) == 2 * (1 + (1 + 3))
    enable = "set_event_receiver_group_enabled"
    assert cost(f'mutation {{ a: {enable}(id: "x") b: {enable}(id: "y") }}') == 200
    assert cost("{ __schema { types { name fields { name } } } }") == 0


async def test_a_costly_query_is_refused_before_any_read(
    limited: tuple[Client, CountingStore],
) -> None:
    client, store = limited
    aliases = " ".join(f"e{n}: events(event: {{}}) {{ id name version }}" for n in range(30))
    started = time.perf_counter()
    answer = await gql(client, f"{{ {aliases} }}")
    took = time.perf_counter() - started
    assert codes(answer) == ["QUERY_TOO_COSTLY"]
    [error] = answer["errors"]
    assert error["extensions"]["cost"] == 30 * (1 + 1000 * 3)
    assert error["extensions"]["max_cost"] == DEFAULTS.max_cost
    assert "data" not in answer
    assert beyond_authentication(store) == {}  # not one call: nothing ran
    print(f"\nrefused a 90,030-value query in {took * 1000:.1f} ms")
    assert took < 2.0  # generous: the machine is shared


async def test_a_deep_query_is_refused_with_its_depth(
    limited: tuple[Client, CountingStore],
) -> None:
    client, store = limited
    deep = (
        '{ event_receiver_group_status(id: "01ARZ3NDEKTSV4RRFFQ69G5FAV", nvrpp: {name: "a", '
        'version: "1", release: "1", platform_id: "x", package: "p"}) { members { latest_event '
        "{ event_receiver { id } } } } }"
    )
    answer = await gql(client, deep)
    assert codes(answer) == ["QUERY_TOO_DEEP"]
    assert answer["errors"][0]["extensions"] == {
        "code": "QUERY_TOO_DEEP",
        "depth": 5,
        "max_depth": 4,
    }
    assert beyond_authentication(store) == {}


async def test_too_many_tokens_are_refused_while_parsing(api: Client) -> None:
    fields = " ".join(f"a{n}: __typename" for n in range(DEFAULTS.max_tokens))
    started = time.perf_counter()
    answer = await gql(api, f"{{ {fields} }}")
    took = time.perf_counter() - started
    assert codes(answer) == ["QUERY_TOO_LARGE"]
    assert answer["errors"][0]["extensions"]["max_tokens"] == DEFAULTS.max_tokens
    assert len(answer["errors"][0]["message"]) < 200  # no echo of the document
    print(f"\nrefused a query of {3 * DEFAULTS.max_tokens} tokens in {took * 1000:.1f} ms")


async def test_a_query_longer_than_the_limit_is_refused_unread(api: Client) -> None:
    answer = await gql(api, "{ __typename }" + " " * DEFAULTS.max_query_bytes)
    assert codes(answer) == ["QUERY_TOO_LARGE"]
    assert answer["errors"][0]["extensions"]["max_query_bytes"] == DEFAULTS.max_query_bytes


async def test_the_introspection_query_fits_every_limit(api: Client) -> None:
    """GraphiQL's own first request must pass."""
    answer = await gql(api, get_introspection_query(descriptions=True))
    assert "errors" not in answer, answer
    assert answer["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_introspection_is_refused_when_turned_off(identity: MemoryIdentity) -> None:
    config = settings(graphql=GraphQLSettings(introspection=False))
    async with asgi_client(make_app(identity, config=config)) as client:
        await add_tenants(client, identity)
        answer = await gql(client, "{ __schema { types { name } } }")
        assert set(codes(answer)) == {"INTROSPECTION_DISABLED"}
        assert "errors" not in await gql(client, "{ events_page { next_cursor } }")


def test_bad_limits_stop_the_start() -> None:
    from entrypoints.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"graphql\.max_cost"):
        load_settings({"WAYPOST__GRAPHQL__MAX_COST": "0"})
    with pytest.raises(SettingsError, match="WAYPOST__GRAPHQL__MAX_DEPTH"):
        load_settings({"WAYPOST__GRAPHQL__MAX_DEPTH": "deep"})
    assert (
        load_settings({"WAYPOST__GRAPHQL__INTROSPECTION": "false"}).graphql.introspection is False
    )
