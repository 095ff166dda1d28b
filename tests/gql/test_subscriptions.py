"""GraphQL's webhooks: subscriptions (by id, by page) and their deliveries (by page, by
status) and a delivery's attempts, from a server that really delivered them to a loopback
target; never a secret; the cost limit counts them; REST and GraphQL agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
import pytest
from graphql import GraphQLObjectType, parse
from litestar import Litestar

from core.usecases.subscriptions import Subscriptions
from entrypoints.http.gql import limits
from entrypoints.http.gql.resolvers import DEFAULT_ATTEMPTS
from entrypoints.http.gql.schema import executable_schema
from tests.gql.conftest import codes, gql
from tests.http.conftest import HEADERS, OTHER_HEADERS, Client, make_receiver, record
from tests.http.test_subscriptions import PATH
from tests.integration.loopback_targets import Answer, loopback_target

pytestmark = pytest.mark.anyio

SUBSCRIPTION = """query ($id: ID!) { subscriptions_by_id(id: $id) {
  id name url description enabled ordering created_at updated_at disabled_reason
  filter { types subjects name version release platform_id package success } } }"""
DELIVERIES = """query ($id: ID!, $status: DeliveryStatus, $limit: Int, $cursor: String) {
  subscription_deliveries(id: $id, status: $status, limit: $limit, cursor: $cursor) {
    items { id subscription_id message_id message_type position status attempt_count
            next_attempt_at last_attempt_at last_status_code last_error created_at }
    next_cursor } }"""
DELIVERY = """query ($id: ID!, $delivery: ID!) {
  subscription_delivery(id: $id, delivery_id: $delivery) {
  id message_id status last_status_code
  attempts { number started_at duration_ms status_code error response_excerpt } } }"""


async def settled(api: Client, ident: str, count: int) -> list[dict[str, Any]]:
    """The subscription's deliveries (REST) once `count` of them are past their first try."""
    with anyio.fail_after(30):
        while True:
            listed = (await api.get(f"{PATH}/{ident}/deliveries", headers=HEADERS)).json()["data"]
            done = all(d["status"] in ("succeeded", "dead") for d in listed)
            if len(listed) == count and done:
                return list(listed)
            await anyio.sleep(0.05)


async def test_subscriptions_and_their_deliveries_with_attempts(
    delivering_api: tuple[Client, Litestar],
) -> None:
    api, _ = delivering_api
    with loopback_target() as hook:
        hook.answer = lambda received: Answer(
            status=500 if b"fail-me" in received.body else 200, body=b"thanks"
        )
        made = await api.post(
            PATH,
            json={
                "name": "hooks",
                "url": hook.url(),
                "description": "deploys",
                "filter": {"types": ["waypost.event.recorded"], "package": "rpm"},
                "ordering": "artifact",
            },
            headers=HEADERS,
        )
        ident = made.json()["data"]
        await api.patch(
            f"{PATH}/{ident}", json={"filter": {"package": "rpm"}}, headers=HEADERS
        )  # every message about an rpm (the receiver's registration is none)
        receiver = await make_receiver(api)
        for build in range(3):
            await record(api, receiver, payload={"build": build})
        await record(api, receiver, description="fail-me")
        # the failing one is retried on a 0.2 s schedule until it is dead
        listed = await settled(api, ident, 4)

    answer = await gql(api, SUBSCRIPTION, {"id": ident})
    assert "errors" not in answer, answer
    [shown] = answer["data"]["subscriptions_by_id"]
    assert shown["name"] == "hooks"
    assert shown["url"] == hook.url()
    assert (shown["ordering"], shown["enabled"], shown["disabled_reason"]) == (
        "artifact",
        True,
        None,
    )
    assert shown["filter"] == {
        "types": None,
        "subjects": None,
        "name": None,
        "version": None,
        "release": None,
        "platform_id": None,
        "package": "rpm",
        "success": None,
    }
    rest = (await api.get(f"{PATH}/{ident}", headers=HEADERS)).json()["data"]
    for moment in ("created_at", "updated_at"):
        assert datetime.fromisoformat(shown[moment]) == datetime.fromisoformat(rest[moment])

    page = await gql(api, "{ subscriptions_page { items { id name } next_cursor } }")
    assert page["data"]["subscriptions_page"] == {
        "items": [{"id": ident, "name": "hooks"}],
        "next_cursor": None,
    }

    # deliveries: newest first, paged by the REST list's cursors, filtered by status
    first = (await gql(api, DELIVERIES, {"id": ident, "limit": 3}))["data"]
    second = await gql(
        api,
        DELIVERIES,
        {"id": ident, "limit": 3, "cursor": first["subscription_deliveries"]["next_cursor"]},
    )
    items = (
        first["subscription_deliveries"]["items"]
        + (second["data"]["subscription_deliveries"]["items"])
    )
    assert [d["id"] for d in items] == [d["id"] for d in listed]
    assert second["data"]["subscription_deliveries"]["next_cursor"] is None
    by_id = {d["id"]: d for d in listed}
    for item in items:
        twin = by_id[item["id"]]
        assert item["status"] == twin["status"]
        assert item["attempt_count"] == twin["attempts"]
        assert item["position"] == str(twin["position"])
        assert item["last_status_code"] == twin["last_status_code"]
    dead = await gql(api, DELIVERIES, {"id": ident, "status": "dead"})
    [gone] = dead["data"]["subscription_deliveries"]["items"]
    assert (gone["status"], gone["last_status_code"]) == ("dead", 500)
    assert gone["attempt_count"] >= 2
    succeeded = await gql(api, DELIVERIES, {"id": ident, "status": "succeeded"})
    assert len(succeeded["data"]["subscription_deliveries"]["items"]) == 3

    # one delivery and every attempt, as REST shows them
    detail = await gql(api, DELIVERY, {"id": ident, "delivery": gone["id"]})
    shown_delivery = detail["data"]["subscription_delivery"]
    rest_delivery = (
        await api.get(f"{PATH}/{ident}/deliveries/{gone['id']}", headers=HEADERS)
    ).json()["data"]
    assert [a["number"] for a in shown_delivery["attempts"]] == [
        a["number"] for a in rest_delivery["attempts"]
    ]
    assert {a["status_code"] for a in shown_delivery["attempts"]} == {500}
    latest = await gql(
        api,
        "query ($id: ID!, $d: ID!) { subscription_delivery(id: $id, delivery_id: $d) "
        "{ attempts(limit: 1) { number } } }",
        {"id": ident, "d": gone["id"]},
    )
    last = rest_delivery["attempts"][-1]["number"]
    assert latest["data"]["subscription_delivery"]["attempts"] == [{"number": last}]
    none = await gql(
        api,
        "query ($id: ID!, $d: ID!) { subscription_delivery(id: $id, delivery_id: $d) "
        "{ attempts(limit: 0) { number } } }",
        {"id": ident, "d": gone["id"]},
    )
    assert codes(none) == ["BAD_REQUEST"]
    assert shown_delivery["attempts"][0]["response_excerpt"] == "thanks"
    ok = next(d for d in items if d["status"] == "succeeded")
    [attempt] = (await gql(api, DELIVERY, {"id": ident, "delivery": ok["id"]}))["data"][
        "subscription_delivery"
    ]["attempts"]
    assert (attempt["number"], attempt["status_code"], attempt["error"]) == (1, 200, None)

    # never a secret, whatever is asked for
    secret = (await api.get(f"{PATH}/{ident}/secret", headers=HEADERS)).json()["data"]["secret"]
    for text in (str(answer), str(first), str(detail)):
        assert secret not in text
        assert "whsec_" not in text
    wrong = await gql(api, f'{{ subscriptions_by_id(id: "{ident}") {{ secret }} }}', status=200)
    assert codes(wrong) == ["GRAPHQL_VALIDATION_FAILED"]

    # another tenant's subscription and delivery are not found; an unknown delivery neither
    theirs = await gql(api, DELIVERY, {"id": ident, "delivery": ok["id"]}, headers=OTHER_HEADERS)
    assert codes(theirs) == ["NOT_FOUND"]
    unknown = await gql(api, DELIVERY, {"id": ident, "delivery": ident})
    assert codes(unknown) == ["NOT_FOUND"]


async def test_a_bad_status_or_page_is_refused_with_a_code(api: Client) -> None:
    answer = await gql(
        api,
        '{ subscription_deliveries(id: "01ARZ3NDEKTSV4RRFFQ69G5FAV", status: lost) '
        "{ next_cursor } }",
    )
    assert codes(answer) == ["GRAPHQL_VALIDATION_FAILED"]
    answer = await gql(api, "{ subscriptions_page(limit: 0) { next_cursor } }")
    assert codes(answer) == ["BAD_REQUEST"], answer


def test_no_type_of_the_schema_has_a_secret() -> None:
    schema = executable_schema()
    for name, kind in schema.type_map.items():
        if isinstance(kind, GraphQLObjectType) and not name.startswith("__"):
            assert not any("secret" in field for field in kind.fields), name


def test_the_cost_limit_counts_deliveries_and_attempts() -> None:
    schema = executable_schema()

    def cost(query: str) -> int:
        return limits.measure(schema, parse(query), None, None)[1]

    assert cost('{ subscriptions_by_id(id: "x") { id name } }') == 1 + 2
    assert cost("{ subscriptions_page { items { id } } }") == 1 + (1 + 50)
    assert cost('{ subscription_deliveries(id: "x", limit: 200) { items { id status } } }') == (
        1 + (1 + 200 * 2)
    )
    attempts = '{ subscription_delivery(id: "x", delivery_id: "y") { attempts { number } } }'
    assert cost(attempts) == 1 + (1 + DEFAULT_ATTEMPTS * 1)
    assert limits.LIST_SIZES["Delivery.attempts"] == DEFAULT_ATTEMPTS
    page = (
        '{ subscription_deliveries(id: "x", limit: 10) '
        "{ items { id attempts(limit: 3) { number error } } } }"
    )
    assert cost(page) == 1 + (1 + 10 * (1 + (1 + 3 * 2)))
    sdl = executable_schema().get_type("Delivery")
    assert isinstance(sdl, GraphQLObjectType)
    default = sdl.fields["attempts"].args["limit"].ast_node
    assert default is not None
    assert getattr(default.default_value, "value", None) == str(DEFAULT_ATTEMPTS)


async def test_the_attempts_of_a_page_of_deliveries_are_one_read(
    delivering_api: tuple[Client, Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No N+1: a page of deliveries with their attempts asks the use cases for the
    attempts once, and never for a delivery one by one."""
    api, _ = delivering_api
    with loopback_target() as hook:
        made = await api.post(PATH, json={"name": "hooks", "url": hook.url()}, headers=HEADERS)
        ident = made.json()["data"]
        receiver = await make_receiver(api)
        for build in range(5):
            await record(api, receiver, payload={"build": build})
        listed = await settled(api, ident, 6)  # the registration and the 5 events
    calls: list[int] = []
    original = Subscriptions.attempts

    async def counted(self: Subscriptions, actor: Any, ids: Any) -> Any:
        calls.append(len(ids))
        return await original(self, actor, ids)

    async def one_by_one(*_: Any) -> Any:
        raise AssertionError("a delivery was read one by one")

    monkeypatch.setattr(Subscriptions, "attempts", counted)
    monkeypatch.setattr(Subscriptions, "delivery", one_by_one)
    query = """query ($id: ID!) { subscription_deliveries(id: $id) {
      items { id attempts { number status_code } } } }"""
    answer = await gql(api, query, {"id": ident})
    assert "errors" not in answer, answer
    items = answer["data"]["subscription_deliveries"]["items"]
    assert [d["id"] for d in items] == [d["id"] for d in listed]
    assert all(d["attempts"] == [{"number": 1, "status_code": 200}] for d in items)
    assert calls == [6]
