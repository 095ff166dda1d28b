"""Event receivers: register (idempotent), read, list."""

from __future__ import annotations

import pytest

from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    SCHEMA,
    Client,
    assert_problem,
    make_receiver,
    receiver_body,
)

pytestmark = pytest.mark.anyio

RECEIVERS = "/api/v1/receivers"


async def test_register_answers_201_then_200_when_identical(api: Client) -> None:
    first = await api.post(RECEIVERS, json=receiver_body(), headers=HEADERS)
    assert first.status_code == 201
    ident = first.json()["data"]
    assert first.headers["location"] == f"{RECEIVERS}/{ident}"
    again = await api.post(RECEIVERS, json=receiver_body(), headers=HEADERS)
    assert again.status_code == 200
    assert again.json() == {"data": ident}


async def test_read_one(api: Client) -> None:
    ident = await make_receiver(api)
    answer = await api.get(f"{RECEIVERS}/{ident}", headers=HEADERS)
    assert answer.status_code == 200
    receiver = answer.json()["data"]
    assert set(receiver) == {
        "id",
        "name",
        "type",
        "version",
        "description",
        "schema",
        "fingerprint",
        "created_at",
    }
    assert receiver["id"] == ident
    assert receiver["schema"] == SCHEMA
    assert len(receiver["fingerprint"]) == 64
    assert receiver["created_at"].endswith("Z")


async def test_list_filters_and_orders(api: Client) -> None:
    a = await make_receiver(api, "a")
    b = await make_receiver(api, "b")
    c = await make_receiver(api, "c", version="2")
    listed = await api.get(RECEIVERS, headers=HEADERS)
    assert [r["id"] for r in listed.json()["data"]] == [c, b, a]
    assert listed.json()["next_cursor"] is None
    ascending = await api.get(RECEIVERS, params={"order": "asc"}, headers=HEADERS)
    assert [r["id"] for r in ascending.json()["data"]] == [a, b, c]
    by_name = await api.get(RECEIVERS, params={"name": "b"}, headers=HEADERS)
    assert [r["id"] for r in by_name.json()["data"]] == [b]
    by_version = await api.get(
        RECEIVERS, params={"version": "1", "type": "ci.build"}, headers=HEADERS
    )
    assert [r["id"] for r in by_version.json()["data"]] == [b, a]


async def test_another_schema_under_the_same_triple_is_a_conflict(api: Client) -> None:
    await make_receiver(api)
    other = receiver_body(schema={"type": "object"})
    assert_problem(await api.post(RECEIVERS, json=other, headers=HEADERS), 409)
    described = receiver_body(description="other")
    assert_problem(await api.post(RECEIVERS, json=described, headers=HEADERS), 409)


async def test_tenants_do_not_see_each_other(api: Client) -> None:
    ident = await make_receiver(api)
    assert_problem(await api.get(f"{RECEIVERS}/{ident}", headers=OTHER_HEADERS), 404)
    listed = await api.get(RECEIVERS, headers=OTHER_HEADERS)
    assert listed.json() == {"data": [], "next_cursor": None}
    # the same triple is free in another tenant
    await make_receiver(api, headers=OTHER_HEADERS)


@pytest.mark.parametrize(
    "ident",
    ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-an-id", "01arz3ndektsv4rrffq69g5fav", "x" * 300],
)
async def test_unknown_or_malformed_id_is_404(api: Client, ident: str) -> None:
    assert_problem(await api.get(f"{RECEIVERS}/{ident}", headers=HEADERS), 404)


async def test_names_at_255_pass_and_at_256_are_refused_with_every_error(api: Client) -> None:
    long = "n" * 255
    body = receiver_body(long, type=long, version=long)
    assert (await api.post(RECEIVERS, json=body, headers=HEADERS)).status_code == 201
    longer = "n" * 256
    body = receiver_body(longer, type=" ", version=longer, description="d" * 4097)
    answer = await api.post(RECEIVERS, json=body, headers=HEADERS)
    problem = assert_problem(answer, 422, "/name", "/type", "/version", "/description")
    assert len(problem["errors"]) == 4


async def test_a_schema_that_does_not_compile_is_422(api: Client) -> None:
    body = receiver_body(schema={"type": "no-such-type"})
    assert_problem(await api.post(RECEIVERS, json=body, headers=HEADERS), 422, "/schema")
    remote = receiver_body(schema={"$ref": "https://example.com/schema.json"})
    assert_problem(await api.post(RECEIVERS, json=remote, headers=HEADERS), 422)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "type": "t", "version": "1"}, "/schema"),
        ({"name": 1, "type": "t", "version": "1", "schema": {}}, "/name"),
        ({"name": "x", "type": "t", "version": "1", "schema": []}, "/schema"),
        ({"name": "x", "type": "t", "version": "1", "schema": {}, "extra": 1}, "/extra"),
        ([], ""),
    ],
)
async def test_wrong_shapes_are_400_naming_the_field(api: Client, body: object, field: str) -> None:
    assert_problem(await api.post(RECEIVERS, json=body, headers=HEADERS), 400, field)
