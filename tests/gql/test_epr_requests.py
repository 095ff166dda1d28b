"""EPR's own GraphQL requests, byte for byte as EPR's clients and docs send them, answer
what EPR documents.

Sources (docs only, nothing of their code): EPR's Go client search and mutation
templates (`pkg/client/graphql.go`), its quickstart (`docs/tutorials/quickstart`), and
epr-python's templates, which send whole objects as variables. Each request goes to the
paths EPR's clients use: `/epr/api/v1/graphql/query` and `/api/v1/graphql/query`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.gql.conftest import gql
from tests.http.conftest import HEADERS, Client

pytestmark = pytest.mark.anyio

PATHS = ["/epr/api/v1/graphql/query", "/api/v1/graphql/query"]
GO_SEARCH = "query ($obj: {input}){{{operation}({argument}: $obj) {{{fields}}}}}"
GO_MUTATION = "mutation ($obj: {input}){{{operation}({argument}: $obj)}}"
EVENT_FIELDS = "id,name,version,release,platform_id,package,description,success,event_receiver_id"
QUICKSTART_RECEIVER = """mutation {
  create_event_receiver(
    event_receiver: {
      name: "the_clash"
      version: "1.0.0"
      type: "london.calling"
      description: "The only band that matters"
      schema: "{\\"name\\": \\"value\\"}"
    }
  )
}"""
QUICKSTART_EVENT = """mutation {
  create_event(
    event: {
      name: "foo"
      version: "1.0.0"
      release: "%s"
      platform_id: "platformID"
      package: "package"
      description: "The Foo of Brixton"
      payload: "{\\"name\\": \\"value\\"}"
      event_receiver_id: "%s"
      success: true
    }
  )
}"""
QUICKSTART_EVENTS = """query {
  events(event: { name: "foo", version: "1.0.0" }) {
    id
    name
    version
    release
    platform_id
    package
    description
    payload
    success
    event_receiver_id
    created_at
  }
}"""


async def raw(client: Client, path: str, body: str) -> dict[str, Any]:
    """POST exactly these bytes, as the Go client does (`Content-Type: application/json`)."""
    answer = await client.post(
        path, content=body.encode(), headers={**HEADERS, "Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    decoded: dict[str, Any] = answer.json()
    return decoded


@pytest.mark.parametrize("path", PATHS)
async def test_the_quickstart_walks_through(api: Client, path: str) -> None:
    made = await gql(api, QUICKSTART_RECEIVER, path=path)
    receiver = made["data"]["create_event_receiver"]
    assert isinstance(receiver, str)
    assert len(receiver) == 26
    # the quickstart's group mutation leaves out `enabled`, which EPR's schema requires:
    # refused there as here
    stale = await gql(
        api,
        'mutation { create_event_receiver_group(event_receiver_group: { name: "foobar" '
        'version: "1.0.0" description: "a fake event receiver group" '
        f'event_receiver_ids: ["{receiver}"] type: "test.test.test" }}) }}',
        path=path,
    )
    assert [e["extensions"]["code"] for e in stale["errors"]] == ["GRAPHQL_VALIDATION_FAILED"]
    group = (
        await gql(
            api,
            'mutation { create_event_receiver_group(event_receiver_group: { name: "foobar" '
            'version: "1.0.0" description: "a fake event receiver group" '
            f'event_receiver_ids: ["{receiver}"] type: "test.test.test" enabled: false }}) }}',
            path=path,
        )
    )["data"]["create_event_receiver_group"]
    enabled = await gql(
        api, f'mutation {{ set_event_receiver_group_enabled(id: "{group}") }}', path=path
    )
    assert enabled == {"data": {"set_event_receiver_group_enabled": group}}
    first = (await gql(api, QUICKSTART_EVENT % ("20231103", receiver), path=path))["data"]
    second = (await gql(api, QUICKSTART_EVENT % ("20240217", receiver), path=path))["data"]
    found = (await gql(api, QUICKSTART_EVENTS, path=path))["data"]["events"]
    assert [e["id"] for e in found] == [first["create_event"], second["create_event"]]
    assert found[0] == {
        "id": first["create_event"],
        "name": "foo",
        "version": "1.0.0",
        "release": "20231103",
        "platform_id": "platformID",
        "package": "package",
        "description": "The Foo of Brixton",
        "payload": {"name": "value"},  # an object out, though a string went in
        "success": True,
        "event_receiver_id": receiver,
        "created_at": found[0]["created_at"],
    }
    by_id = await gql(
        api,
        f'query {{ events_by_id(id: "{first["create_event"]}") {{ id payload created_at }} }}',
        path=path,
    )
    assert by_id["data"]["events_by_id"][0]["payload"] == {"name": "value"}
    receivers = await gql(
        api,
        f'query {{ event_receivers_by_id(id: "{receiver}") {{ name version description type '
        "schema fingerprint created_at } }",
        path=path,
    )
    [shown] = receivers["data"]["event_receivers_by_id"]
    assert shown["schema"] == {"name": "value"}
    assert len(shown["fingerprint"]) == 64
    groups = await gql(
        api,
        f'query {{ event_receiver_groups_by_id(id: "{group}") {{ name version description type '
        "enabled event_receiver_ids created_at updated_at } }",
        path=path,
    )
    [shown_group] = groups["data"]["event_receiver_groups_by_id"]
    assert shown_group["enabled"] is True
    assert shown_group["event_receiver_ids"] == [receiver]


@pytest.mark.parametrize("path", PATHS)
async def test_the_go_clients_templates_with_variables(api: Client, path: str) -> None:
    mutation = GO_MUTATION.format(
        input="CreateEventReceiverInput!",
        operation="create_event_receiver",
        argument="event_receiver",
    )
    # the Go client's own example variables: the schema as a JSON string
    created = await raw(
        api,
        path,
        json.dumps(
            {
                "query": mutation,
                "variables": {
                    "obj": {
                        "name": "foobar",
                        "version": "1.0.0",
                        "description": "foobar is the description",
                        "type": "foobar.test",
                        "schema": "{}",
                    }
                },
            }
        ),
    )
    receiver = created["data"]["create_event_receiver"]
    event = GO_MUTATION.format(
        input="CreateEventInput!", operation="create_event", argument="event"
    )
    for payload in ('{"name": "foo"}', {"name": "foo"}):  # a JSON string, and an object
        body = {
            "name": "foo",
            "version": "1.0.0",
            "release": "2024.01",
            "platform_id": "x86-64-gnu-linux-9",
            "package": "rpm",
            "description": "the foo event for foo",
            "payload": payload,
            "success": True,
            "event_receiver_id": receiver,
        }
        done = await raw(api, path, json.dumps({"query": event, "variables": {"obj": body}}))
        assert set(done) == {"data"}, done
    for operation, argument, input_type, params, fields in (
        ("events", "event", "FindEventInput!", {"name": "foo", "version": "1.0.0"}, EVENT_FIELDS),
        (
            "event_receivers",
            "event_receiver",
            "FindEventReceiverInput!",
            {"name": "foobar", "version": "1.0.0"},
            "id,name,type,version,description",
        ),
        (
            "event_receiver_groups",
            "event_receiver_group",
            "FindEventReceiverGroupInput!",
            {"name": "foobar", "version": "1.0.0"},
            "id,name,type,version,description",
        ),
    ):
        query = GO_SEARCH.format(
            input=input_type, operation=operation, argument=argument, fields=fields
        )
        found = await raw(api, path, json.dumps({"query": query, "variables": {"obj": params}}))
        assert set(found) == {"data"}, found
        listed = found["data"][operation]
        expected = {"events": 2, "event_receivers": 1, "event_receiver_groups": 0}[operation]
        assert len(listed) == expected, found
        for item in listed:
            assert set(item) == set(fields.split(","))
    # the exact search string of EPR's docs, by id
    by_id = (
        '{"query":"query ($er: FindEventReceiverInput!){event_receivers(event_receiver: $er) '
        '{id,name,type,version,description}}","variables":{"er":{"id":"RECEIVER"}}}'
    ).replace("RECEIVER", receiver)
    assert (await raw(api, path, by_id))["data"]["event_receivers"][0]["id"] == receiver


async def test_epr_pythons_whole_objects_are_accepted_on_its_paths_only(api: Client) -> None:
    """epr-python sends its dataclasses whole: `id`, `created_at`, `fingerprint`,
    `event_receiver` are not fields of EPR's inputs. EPR's paths ignore them; the
    strict endpoint names them (a typo there must not pass silently)."""
    mutation = GO_MUTATION.format(
        input="CreateEventReceiverInput!",
        operation="create_event_receiver",
        argument="event_receiver",
    )
    whole = {
        "id": "",
        "name": "python-receiver",
        "type": "dev.python",
        "version": "1.0.0",
        "description": "made by epr-python",
        "schema": {},
        "fingerprint": "",
        "created_at": "",
    }
    body = json.dumps({"query": mutation, "variables": {"obj": whole}})
    for path in PATHS:
        done = await raw(api, path, body)
        assert set(done) == {"data"}, done
    strict = await raw(api, "/api/v1/graphql", body)
    assert strict.get("data") is None
    assert {e["extensions"]["code"] for e in strict["errors"]} == {"BAD_USER_INPUT"}
    named = " ".join(e["message"] for e in strict["errors"])
    for unknown in ("'id'", "'fingerprint'", "'created_at'"):
        assert unknown in named, named
