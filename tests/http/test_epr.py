"""`/epr`: every route answers with EPR's shapes and status codes (SAS's Event Provenance
Registry, as the reference describes it), over Waypost's use cases and credentials.

The request bodies are what EPR's clients post: the Go client and `epr-cli` send whole
storage structs (`id: ""`, a zero `created_at`, an empty `EventReceiver`), and those
fields are ignored, as EPR ignored them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.http.conftest import HEADERS, OTHER_HEADERS, Client

pytestmark = pytest.mark.anyio

EPR = "/epr/api/v1"
ZERO_TIME = "0001-01-01T00:00:00Z"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
EMPTY_RECEIVER = {
    "id": "",
    "name": "",
    "type": "",
    "version": "",
    "description": "",
    "schema": None,
    "fingerprint": "",
    "created_at": ZERO_TIME,
}


def go_receiver(**over: Any) -> dict[str, Any]:
    """`cli/testdata/er_foo.json`: the Go client's whole EventReceiver struct."""
    body: dict[str, Any] = {
        "id": "",
        "name": "foo-cli",
        "type": "epr.foo.cli",
        "version": "1.0.0",
        "description": "foo cli created foo",
        "schema": SCHEMA,
        "fingerprint": "",
        "created_at": ZERO_TIME,
    }
    return {**body, **over}


def go_event(receiver_id: str, **over: Any) -> dict[str, Any]:
    """`cli/testdata/e_foo.json`: the whole Event struct, with its empty EventReceiver."""
    body: dict[str, Any] = {
        "id": "",
        "name": "foo",
        "version": "1.0.0",
        "release": "2024.01",
        "platform_id": "x86-64-gnu-linux-9",
        "package": "rpm",
        "description": "the foo event for foo",
        "payload": {"name": "foo"},
        "success": True,
        "created_at": ZERO_TIME,
        "event_receiver_id": receiver_id,
        "EventReceiver": EMPTY_RECEIVER,
    }
    return {**body, **over}


def go_group(receiver_ids: list[str], **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "",
        "name": "foo-group",
        "type": "epr.foo.group",
        "version": "1.0.0",
        "description": "the foo gate",
        "enabled": True,
        "event_receiver_ids": receiver_ids,
        "created_at": ZERO_TIME,
        "updated_at": ZERO_TIME,
    }
    return {**body, **over}


async def created(api: Client, kind: str, body: Any, headers: dict[str, str] = HEADERS) -> str:
    answer = await api.post(f"{EPR}/{kind}", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    decoded = answer.json()
    assert set(decoded) == {"data"}
    ident: str = decoded["data"]
    assert len(ident) == 26
    return ident


def refused(answer: Any, status: int) -> str:
    """EPR's error envelope with `status`; its one message."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"errors"}, body
    [message] = body["errors"]
    assert isinstance(message, str)
    return message


async def test_receivers_create_and_read_in_eprs_shapes(api: Client) -> None:
    receiver = await created(api, "receivers", go_receiver())
    assert await created(api, "receivers", go_receiver()) == receiver  # identical: same id
    answer = await api.get(f"{EPR}/receivers/{receiver}", headers=HEADERS)
    assert answer.status_code == 200
    [shown] = answer.json()["data"]
    assert list(shown) == [
        "id",
        "name",
        "type",
        "version",
        "description",
        "schema",
        "fingerprint",
        "created_at",
    ]
    assert shown["id"] == receiver
    assert shown["schema"] == SCHEMA
    assert len(shown["fingerprint"]) == 64
    # the same receiver through Waypost's own API
    own = (await api.get(f"/api/v1/receivers/{receiver}", headers=HEADERS)).json()["data"]
    assert own == shown


async def test_events_create_and_read_with_their_event_receiver(api: Client) -> None:
    receiver = await created(api, "receivers", go_receiver())
    event = await created(api, "events", go_event(receiver))
    answer = await api.get(f"{EPR}/events/{event}", headers=HEADERS)
    assert answer.status_code == 200
    [shown] = answer.json()["data"]
    assert list(shown) == [
        "id",
        "name",
        "version",
        "release",
        "platform_id",
        "package",
        "description",
        "payload",
        "success",
        "created_at",
        "event_receiver_id",
        "EventReceiver",
    ]
    assert shown["payload"] == {"name": "foo"}
    assert shown["success"] is True
    receiver_shown = (await api.get(f"{EPR}/receivers/{receiver}", headers=HEADERS)).json()
    assert shown["EventReceiver"] == receiver_shown["data"][0]


async def test_success_defaults_to_false_and_a_json_string_payload_is_an_object(
    api: Client,
) -> None:
    receiver = await created(api, "receivers", go_receiver())
    body = go_event(receiver, payload=json.dumps({"name": "bar"}))
    del body["success"]
    event = await created(api, "events", body)
    [shown] = (await api.get(f"{EPR}/events/{event}", headers=HEADERS)).json()["data"]
    assert shown["success"] is False
    assert shown["payload"] == {"name": "bar"}


async def test_groups_create_read_and_toggle(api: Client) -> None:
    one = await created(api, "receivers", go_receiver())
    two = await created(api, "receivers", go_receiver(name="bar-cli"))
    body = go_group([two, one])
    del body["enabled"]
    group = await created(api, "groups", body)
    [shown] = (await api.get(f"{EPR}/groups/{group}", headers=HEADERS)).json()["data"]
    assert list(shown) == [
        "id",
        "name",
        "type",
        "version",
        "description",
        "enabled",
        "event_receiver_ids",
        "created_at",
        "updated_at",
    ]
    assert shown["enabled"] is False  # EPR's default
    assert shown["event_receiver_ids"] == [two, one]  # the order is kept
    assert shown["created_at"] == shown["updated_at"]
    # ModifyEventReceiverGroup PATCHes the whole group; only `enabled` is read
    toggled = await api.patch(
        f"{EPR}/groups/{group}", json={**shown, "enabled": True, "name": "x"}, headers=HEADERS
    )
    assert toggled.status_code == 200
    assert toggled.json() == {"data": group}
    [after] = (await api.get(f"{EPR}/groups/{group}", headers=HEADERS)).json()["data"]
    assert after["enabled"] is True
    assert after["name"] == "foo-group"
    assert after["updated_at"] > shown["updated_at"]  # EPR's own e2e test wants this


async def test_not_found_is_404_with_eprs_words(api: Client) -> None:
    unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    for kind, name in (
        ("events", "event"),
        ("receivers", "eventReceiver"),
        ("groups", "eventReceiverGroup"),
    ):
        for ident in (unknown, "not-an-id"):
            message = refused(await api.get(f"{EPR}/{kind}/{ident}", headers=HEADERS), 404)
            assert message == f"object not found: {name} with id {ident} not found"
    message = refused(
        await api.patch(f"{EPR}/groups/{unknown}", json={"enabled": True}, headers=HEADERS), 404
    )
    assert message.startswith("object not found: eventReceiverGroup")


async def test_another_tenants_objects_are_not_found(api: Client) -> None:
    theirs = await created(api, "receivers", go_receiver(), headers=OTHER_HEADERS)
    refused(await api.get(f"{EPR}/receivers/{theirs}", headers=HEADERS), 404)
    message = refused(await api.post(f"{EPR}/events", json=go_event(theirs), headers=HEADERS), 400)
    assert message.startswith("invalid input: ")
    message = refused(
        await api.post(f"{EPR}/groups", json=go_group([theirs]), headers=HEADERS), 400
    )
    assert theirs in message


@pytest.mark.parametrize(
    ("kind", "body", "says"),
    [
        ("receivers", {}, "/schema"),
        ("receivers", go_receiver(name=" "), "/name"),
        ("receivers", go_receiver(schema="{abcd}"), "/schema"),
        ("receivers", go_receiver(schema=[1]), "/schema"),
        ("receivers", go_receiver(schema={"type": 12}), "/schema"),
        ("receivers", go_receiver(name=7), "$.name"),
        ("events", go_event("01ARZ3NDEKTSV4RRFFQ69G5FAV"), "/event_receiver_id"),
        ("events", go_event("", name=""), "/event_receiver_id"),
        ("events", go_event("x", success="true"), "$.success"),
        ("groups", go_group([]), "/event_receiver_ids"),
        ("groups", go_group([""]), "/event_receiver_ids"),
        ("groups", go_group(["01ARZ3NDEKTSV4RRFFQ69G5FAV"]), "/event_receiver_ids"),
    ],
)
async def test_invalid_input_is_400_with_eprs_prefix(
    api: Client, kind: str, body: dict[str, Any], says: str
) -> None:
    message = refused(await api.post(f"{EPR}/{kind}", json=body, headers=HEADERS), 400)
    assert message.startswith("invalid input: "), message
    assert says in message, message


async def test_a_payload_that_fails_its_schema_is_400_naming_each_error(api: Client) -> None:
    receiver = await created(api, "receivers", go_receiver())
    message = refused(
        await api.post(f"{EPR}/events", json=go_event(receiver, payload={"x": 1}), headers=HEADERS),
        400,
    )
    assert message.startswith("invalid input: ")
    assert "name" in message
    assert "\n" in message  # EPR joined its messages with newlines


async def test_a_body_that_is_not_json_is_400(api: Client) -> None:
    for kind in ("events", "receivers", "groups"):
        answer = await api.post(
            f"{EPR}/{kind}",
            content=b"{not json",
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        assert refused(answer, 400).startswith("invalid input: ")
    group = await created(api, "groups", go_group([await created(api, "receivers", go_receiver())]))
    for body in (b"{not json", b"{}", b'{"enabled": "yes"}'):
        answer = await api.patch(f"{EPR}/groups/{group}", content=body, headers=HEADERS)
        assert refused(answer, 400).startswith("invalid input: ")


async def test_a_conflicting_receiver_is_409_in_eprs_envelope(api: Client) -> None:
    await created(api, "receivers", go_receiver())
    message = refused(
        await api.post(f"{EPR}/receivers", json=go_receiver(schema={}), headers=HEADERS), 409
    )
    assert message.startswith("conflict: ")


async def test_credentials_and_permissions_answer_in_eprs_envelope(api: Client) -> None:
    answer = await api.post(f"{EPR}/receivers", json=go_receiver(), headers={"Authorization": ""})
    assert refused(answer, 401).startswith("unauthenticated: ")
    assert "Basic" in answer.headers["www-authenticate"]
    made = await api.post(
        "/api/v1/api-keys", json={"name": "viewer", "role": "event_viewer"}, headers=HEADERS
    )
    viewer = {"Authorization": f"Bearer {made.json()['data']['key']}"}
    answer = await api.post(f"{EPR}/receivers", json=go_receiver(), headers=viewer)
    assert refused(answer, 403).startswith("forbidden: ")


async def test_health_probes_answer_as_epr_does(api: Client) -> None:
    live = await api.get("/epr/healthz/liveness", headers={})
    assert live.status_code == 200
    assert live.content == b'"{\\"alive\\":true}"'  # a JSON string holding JSON, as EPR's
    ready = await api.get("/epr/healthz/readiness", headers={})
    assert ready.status_code == 200
    assert ready.json() == '{"ready":true}'
    status = (await api.get("/epr/healthz/status", headers={})).json()
    assert set(status) == {
        "service",
        "uptime",
        "debug",
        "health",
        "start_time",
        "host",
        "port",
        "metadata",
    }
    assert status["health"] == {"readiness": '{"ready":true}', "liveness": '{"alive":true}'}


async def test_graphiql_at_eprs_path_sends_to_eprs_endpoint(api: Client) -> None:
    page = await api.get(f"{EPR}/graphql", headers={})
    assert page.status_code == 200
    assert 'data-endpoint="/epr/api/v1/graphql/query"' in page.text


async def test_creates_honour_idempotency_key_like_their_rest_twins(api: Client) -> None:
    """A retry with the same key gets the first answer (EPR's 200, replayed) and nothing
    is made twice; the same key with another body is refused in EPR's envelope."""
    made: dict[str, str] = {}
    receiver = await created(api, "receivers", go_receiver(name="once"))
    bodies = {
        "receivers": go_receiver(name="keyed"),
        "events": go_event(receiver),
        "groups": go_group([receiver]),
    }
    for kind, body in bodies.items():
        keyed = {**HEADERS, "Idempotency-Key": f"epr-{kind}"}
        first = await api.post(f"{EPR}/{kind}", json=body, headers=keyed)
        again = await api.post(f"{EPR}/{kind}", json=body, headers=keyed)
        assert first.status_code == again.status_code == 200, (kind, again.text)
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"].startswith("application/json")
        made[kind] = first.json()["data"]
        other = await api.post(f"{EPR}/{kind}", json={**body, "description": "x"}, headers=keyed)
        assert "Idempotency-Key" in refused(other, 400)
    events = (await api.get("/api/v1/events", headers=HEADERS)).json()["data"]
    assert [e["id"] for e in events] == [made["events"]]
    groups = (await api.get("/api/v1/groups", headers=HEADERS)).json()["data"]
    assert [g["id"] for g in groups] == [made["groups"]]


async def test_graphql_takes_no_idempotency_key(api: Client) -> None:
    """A document may hold several mutations: the header is not read (not even checked)."""
    query = {"query": "{ event_receivers_page(limit: 1) { items { id } } }"}
    for path in (f"{EPR}/graphql/query", "/api/v1/graphql"):
        odd = {**HEADERS, "Idempotency-Key": "k" * 300}  # over 255: unusable as a key
        answer = await api.post(path, json=query, headers=odd)
        assert answer.status_code == 200, answer.text
        assert "errors" not in answer.json()
