"""GraphQL's field x role matrix, generated from the schema: every query and mutation (and
every nested field that reads through a use case) allows exactly the roles whose
ROLE_PERMISSIONS hold its REST twin's permission, and another tenant's ids are not found.

Nothing lists fields by hand: the documents are built from the schema's own types (each
required argument gets a value of its type), so a new field is tried as soon as it
exists, and a root field without a permission fails before that (the schema refuses to
build, and the first test says which).
"""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    Undefined,
    build_schema,
)

from core.domain.access import ROLE_PERMISSIONS, Permission
from entrypoints.http.gql.resolvers import FIELDS
from entrypoints.http.gql.schema import ROOTS, SDL, executable_schema
from tests.gql.conftest import gql
from tests.http.conftest import OTHER_HEADERS, Client, event_body, make_receiver, record
from tests.http.test_access_control import PRINCIPALS, credentials

pytestmark = pytest.mark.anyio

SCHEMA = executable_schema()
SOME_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
#: How a nested field is reached: the root list that holds its type's objects.
REACH = {
    "Event": ("events_page(limit: 1)", "items"),
    "EventReceiverGroup": ("event_receiver_groups_page(limit: 1)", "items"),
    "Delivery": (f'subscription_deliveries(id: "{SOME_ID}", limit: 1)', "items"),
}


def named(kind: GraphQLOutputType | GraphQLInputType) -> GraphQLNamedType:
    while isinstance(kind, GraphQLNonNull | GraphQLList):
        kind = kind.of_type
    assert isinstance(kind, GraphQLNamedType)
    return kind


def literal(kind: GraphQLInputType, ids: dict[str, str], name: str = "id") -> str:
    """A value of `kind` as a GraphQL literal: ids from `ids` (by the argument's name, else
    its `id`), required fields only."""
    if isinstance(kind, GraphQLNonNull):
        return literal(kind.of_type, ids, name)
    if isinstance(kind, GraphQLList):
        return f"[{literal(kind.of_type, ids, name)}]"
    if isinstance(kind, GraphQLInputObjectType):
        parts = [
            f"{name}: {literal(f.type, ids)}"
            for name, f in kind.fields.items()
            if isinstance(f.type, GraphQLNonNull)
        ]
        return "{" + ", ".join(parts) + "}"
    if isinstance(kind, GraphQLEnumType):
        first: str = next(iter(kind.values))
        return first
    assert isinstance(kind, GraphQLScalarType), kind
    return {
        "ID": f'"{ids.get(name, ids.get("id", SOME_ID))}"',
        "String": '"x"',
        "Boolean": "true",
        "Int": "1",
        "JSON": '"{}"',
        "Time": '"2026-01-01T00:00:00Z"',
    }[kind.name]


def arguments(field: GraphQLField, ids: dict[str, str]) -> str:
    required = [
        f"{name}: {literal(arg.type, ids, name)}"
        for name, arg in field.args.items()
        if isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined
    ]
    return f"({', '.join(required)})" if required else ""


def selection(field: GraphQLField) -> str:
    return " { __typename }" if isinstance(named(field.type), GraphQLObjectType) else ""


def root_document(root: str, name: str, ids: dict[str, str]) -> str:
    owner = SCHEMA.get_type(root)
    assert isinstance(owner, GraphQLObjectType)
    field = owner.fields[name]
    operation = "mutation" if root == "Mutation" else "query"
    return f"{operation} {{ {name}{arguments(field, ids)}{selection(field)} }}"


def nested_document(type_name: str, name: str) -> str:
    owner = SCHEMA.get_type(type_name)
    assert isinstance(owner, GraphQLObjectType)
    root, items = REACH[type_name]
    field = owner.fields[name]
    return f"query {{ {root} {{ {items} {{ id {name}{selection(field)} }} }} }}"


def coordinates() -> list[str]:
    """Every root field of the schema, and every nested field with a resolver."""
    found = []
    for root in ROOTS:
        owner = SCHEMA.get_type(root)
        assert isinstance(owner, GraphQLObjectType)
        found += [f"{root}.{name}" for name in owner.fields]
    found += [c for c in FIELDS if c.split(".")[0] not in ROOTS]
    return found


COORDINATES = coordinates()


def refused(answer: dict[str, Any]) -> bool:
    return any(e["extensions"]["code"] == "FORBIDDEN" for e in answer.get("errors", []))


def test_every_root_field_has_a_resolver_and_a_permission() -> None:
    bare = build_schema(SDL)
    for root in ROOTS:
        owner = bare.get_type(root)
        assert isinstance(owner, GraphQLObjectType)
        for name in owner.fields:
            permission, _ = FIELDS[f"{root}.{name}"]
            assert isinstance(permission, Permission), f"{root}.{name}"
    assert len(COORDINATES) >= 20
    assert set(REACH) >= {c.split(".")[0] for c in COORDINATES if c.split(".")[0] not in ROOTS}


def test_a_field_added_without_a_resolver_stops_the_schema() -> None:
    from entrypoints.http.gql import schema as schema_module

    original = schema_module.SDL
    try:
        schema_module.SDL = original.replace(  # type: ignore[misc]
            "type Query {", "type Query {\n  leak: [Event!]!"
        )
        schema_module.executable_schema.cache_clear()
        with pytest.raises(LookupError, match=r"Query\.leak has no resolver"):
            schema_module.executable_schema()
    finally:
        schema_module.SDL = original  # type: ignore[misc]
        schema_module.executable_schema.cache_clear()
    assert schema_module.executable_schema() is not None


def matrix() -> str:
    """The matrix as a table (for the closing note): y allowed, . refused."""
    columns = list(PRINCIPALS)
    lines = ["| field | permission | " + " | ".join(columns) + " |", "|---|---|" + "---|" * 6]
    for coordinate in COORDINATES:
        permission = FIELDS[coordinate][0]
        cells = ["y" if permission in ROLE_PERMISSIONS[PRINCIPALS[w]] else "." for w in columns]
        lines.append(f"| {coordinate} | {permission} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def test_every_field_allows_exactly_the_roles_that_hold_its_permission(
    api: Client,
) -> None:
    who_may = await credentials(api)
    receiver = await make_receiver(api)
    await record(api, receiver)
    group = await api.post(
        "/api/v1/groups",
        json={"name": "g", "type": "t", "version": "1", "event_receiver_ids": [receiver]},
        headers=who_may["admin"],
    )
    assert group.status_code == 201, group.text
    wrong: list[str] = []
    for coordinate in COORDINATES:
        type_name, name = coordinate.split(".")
        permission = FIELDS[coordinate][0]
        if type_name in ROOTS:
            document, needs = root_document(type_name, name, {}), {permission}
        else:
            document = nested_document(type_name, name)
            root_field = REACH[type_name][0].split("(")[0]
            needs = {permission, FIELDS[f"Query.{root_field}"][0]}
        for who, headers in who_may.items():
            answer = await gql(api, document, headers=headers)
            assert "GRAPHQL_VALIDATION_FAILED" not in str(answer), (document, answer)
            expected = needs <= ROLE_PERMISSIONS[PRINCIPALS[who]]
            if refused(answer) == expected:
                wrong.append(f"{who} {coordinate}: {answer}")
            if not expected and type_name in ROOTS:  # nothing leaks past a refusal
                assert (answer.get("data") or {}).get(name) is None, (who, coordinate, answer)
    assert not wrong, "\n".join(wrong)
    print(matrix())


async def their_subscription_and_delivery(api: Client) -> tuple[str, str]:
    """A subscription of the other tenant and a delivery of it (queued by a replay of the
    message its receiver's registration wrote: these apps deliver nothing by themselves)."""
    await make_receiver(api, "hooked", headers=OTHER_HEADERS)
    made = await api.post(
        "/api/v1/subscriptions",
        json={"name": "hooks", "url": "https://hooks.example.com/in"},
        headers=OTHER_HEADERS,
    )
    assert made.status_code == 201, made.text
    subscription: str = made.json()["data"]
    path = f"/api/v1/subscriptions/{subscription}"
    queued = await api.post(f"{path}/replay", json={"after": 0}, headers=OTHER_HEADERS)
    assert queued.status_code == 202, queued.text
    assert queued.json()["data"]["queued"] >= 1
    listed = await api.get(f"{path}/deliveries", headers=OTHER_HEADERS)
    delivery: str = listed.json()["data"][0]["id"]
    return subscription, delivery


async def test_another_tenants_ids_are_not_found_by_every_field_that_takes_one(
    api: Client,
) -> None:
    theirs_receiver = await make_receiver(api, headers=OTHER_HEADERS)
    theirs_event = await api.post(
        "/api/v1/events", json=event_body(theirs_receiver), headers=OTHER_HEADERS
    )
    theirs_group = await api.post(
        "/api/v1/groups",
        json={"name": "g", "type": "t", "version": "1", "event_receiver_ids": [theirs_receiver]},
        headers=OTHER_HEADERS,
    )
    subscription, delivery = await their_subscription_and_delivery(api)
    ids_of = {
        "Event": theirs_event.json()["data"],
        "EventReceiver": theirs_receiver,
        "EventReceiverGroup": theirs_group.json()["data"],
        "WebhookSubscription": subscription,
    }
    #: The fields whose `id` is a subscription's, and the other ids they take.
    subscription_fields = {
        "subscription_deliveries": {},
        "subscription_delivery": {"delivery_id": delivery},
    }
    tried = 0
    for root in ROOTS:
        owner = SCHEMA.get_type(root)
        assert isinstance(owner, GraphQLObjectType)
        for name, field in owner.fields.items():
            id_arg = field.args.get("id")
            if id_arg is None:
                continue
            kind = "EventReceiverGroup" if "group" in name else named(field.type).name
            if name in subscription_fields:
                kind = "WebhookSubscription"
            if kind not in ids_of:
                kind = "EventReceiverGroup"
            ident = ids_of[kind]
            document = root_document(root, name, {"id": ident, **subscription_fields.get(name, {})})
            answer = await gql(api, document)
            assert [e["extensions"]["code"] for e in answer["errors"]] == ["NOT_FOUND"], (
                name,
                answer,
            )
            assert ident in answer["errors"][0]["message"]
            if root == "Query":  # it is there, in its own tenant
                own = await gql(api, document, headers=OTHER_HEADERS)
                assert "errors" not in own, (name, own)
            tried += 1
    assert tried >= 10
    # EPR's searches by id answer no match rather than an error, as EPR does
    for name, argument in (
        ("events", "event"),
        ("event_receivers", "event_receiver"),
        ("event_receiver_groups", "event_receiver_group"),
    ):
        ident = ids_of[
            {"events": "Event", "event_receivers": "EventReceiver"}.get(name, "EventReceiverGroup")
        ]
        answer = await gql(api, f'{{ {name}({argument}: {{id: "{ident}"}}) {{ id }} }}')
        assert answer == {"data": {name: []}}
