"""Events: record one, record a batch, read, list with every filter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    Client,
    ManualClock,
    assert_problem,
    event_body,
    make_receiver,
    record,
)

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"


async def test_record_answers_201_and_the_event_reads_back(api: Client) -> None:
    receiver = await make_receiver(api)
    answer = await api.post(EVENTS, json=event_body(receiver), headers=HEADERS)
    assert answer.status_code == 201
    ident = answer.json()["data"]
    assert answer.headers["location"] == f"{EVENTS}/{ident}"
    event = (await api.get(f"{EVENTS}/{ident}", headers=HEADERS)).json()["data"]
    assert event == {**event_body(receiver), "id": ident, "created_at": event["created_at"]}


async def test_a_payload_that_fails_the_schema_is_422_with_every_error(api: Client) -> None:
    receiver = await make_receiver(api)
    bad = event_body(receiver, payload={"build": "one", "commit": 7}, name=" ")
    problem = assert_problem(
        await api.post(EVENTS, json=bad, headers=HEADERS), 422, "/name", "/payload/build"
    )
    assert len(problem["errors"]) == 3
    assert any(e["field"] == "/payload/commit" for e in problem["errors"])
    listed = await api.get(EVENTS, headers=HEADERS)
    assert listed.json()["data"] == []


async def test_an_unknown_receiver_is_422(api: Client) -> None:
    other = await make_receiver(api, headers=OTHER_HEADERS)
    for receiver in ("01ARZ3NDEKTSV4RRFFQ69G5FAV", other):
        answer = await api.post(EVENTS, json=event_body(receiver), headers=HEADERS)
        assert_problem(answer, 422, "/event_receiver_id")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"success": "true"}, "/success"),
        ({"success": None}, "/success"),
        ({"payload": [1]}, "/payload"),
        ({"name": 5}, "/name"),
        ({"unknown": 1}, "/unknown"),
    ],
)
async def test_wrong_types_are_400(api: Client, change: dict[str, Any], field: str) -> None:
    receiver = await make_receiver(api)
    answer = await api.post(EVENTS, json=event_body(receiver, **change), headers=HEADERS)
    assert_problem(answer, 400, field)


async def test_a_missing_field_is_named(api: Client) -> None:
    body = event_body("x")
    del body["success"]
    assert_problem(await api.post(EVENTS, json=body, headers=HEADERS), 400, "/success")


async def test_malformed_json_is_400(api: Client) -> None:
    for content in (b"{", b"", b"not json", b'{"name": "a",}'):
        answer = await api.post(
            EVENTS,
            content=content,
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        assert_problem(answer, 400, "")


async def test_batch_answers_ids_in_input_order(api: Client) -> None:
    receiver = await make_receiver(api)
    events = [event_body(receiver, payload={"build": i}) for i in range(5)]
    answer = await api.post(BATCH, json={"events": events}, headers=HEADERS)
    assert answer.status_code == 201
    ids = answer.json()["data"]
    assert len(ids) == 5
    for i, ident in enumerate(ids):
        event = (await api.get(f"{EVENTS}/{ident}", headers=HEADERS)).json()["data"]
        assert event["payload"] == {"build": i}


async def test_batch_is_all_or_nothing_with_indexed_fields(api: Client) -> None:
    receiver = await make_receiver(api)
    events = [
        event_body(receiver),
        event_body(receiver, payload={}),
        event_body(receiver),
        event_body("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ]
    answer = await api.post(BATCH, json={"events": events}, headers=HEADERS)
    assert_problem(answer, 422, "/events/1/payload", "/events/3/event_receiver_id")
    assert (await api.get(EVENTS, headers=HEADERS)).json()["data"] == []


async def test_batch_shape_errors_are_400_with_indexed_fields(api: Client) -> None:
    receiver = await make_receiver(api)
    events = [event_body(receiver), event_body(receiver, success="yes")]
    answer = await api.post(BATCH, json={"events": events}, headers=HEADERS)
    assert_problem(answer, 400, "/events/1/success")


async def test_batch_of_1000_passes_and_1001_is_too_large(api: Client) -> None:
    receiver = await make_receiver(api)
    events = [event_body(receiver, payload={"build": i}) for i in range(1000)]
    answer = await api.post(BATCH, json={"events": events}, headers=HEADERS)
    assert answer.status_code == 201
    assert len(answer.json()["data"]) == 1000
    events.append(event_body(receiver))
    assert_problem(await api.post(BATCH, json={"events": events}, headers=HEADERS), 413, "/events")
    assert_problem(await api.post(BATCH, json={"events": []}, headers=HEADERS), 422, "/events")


async def test_list_with_every_filter(api: Client, clock: ManualClock) -> None:
    build = await make_receiver(api, "build")
    test = await make_receiver(api, "test")
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    early = await record(api, build, name="app", success=True)
    clock.set(datetime(2026, 3, 2, tzinfo=UTC))
    failed = await record(api, test, name="app", success=False)
    other_version = await record(api, build, version="2.0")
    other_release = await record(api, build, release="2")
    other_platform = await record(api, build, platform_id="aarch64")
    other_package = await record(api, build, package="deb")
    other_name = await record(api, build, name="lib")

    async def ids(**params: str) -> list[str]:
        answer = await api.get(EVENTS, params=params, headers=HEADERS)
        assert answer.status_code == 200, answer.text
        return [e["id"] for e in answer.json()["data"]]

    assert await ids(name="lib") == [other_name]
    assert await ids(version="2.0") == [other_version]
    assert await ids(release="2") == [other_release]
    assert await ids(platform_id="aarch64") == [other_platform]
    assert await ids(package="deb") == [other_package]
    assert await ids(success="false") == [failed]
    assert await ids(event_receiver_id=test) == [failed]
    assert await ids(until="2026-03-02T00:00:00Z") == [early]
    assert await ids(since="2026-03-02T00:00:00+00:00", name="app", version="1.0") == [
        other_package,
        other_platform,
        other_release,
        failed,
    ]
    assert await ids(since="2026-03-02T01:00:00+01:00", success="true", name="app") == [
        other_package,
        other_platform,
        other_release,
        other_version,
    ]
    nvrpp = {
        "name": "app",
        "version": "1.0",
        "release": "1",
        "platform_id": "x86_64",
        "package": "rpm",
    }
    assert await ids(**nvrpp) == [failed, early]
    assert await ids(**nvrpp, order="asc") == [early, failed]
    assert await ids(**nvrpp, success="true", event_receiver_id=build) == [early]
    assert await ids(since="2026-03-01T00:00:00Z", until="2026-03-01T12:00:00Z") == [early]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "up"}, "order"),
        ({"success": "maybe"}, "success"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),
        ({"since": "2026-01-01"}, "since"),
        ({"cursor": "garbage!"}, "cursor"),
    ],
)
async def test_bad_query_parameters_are_400(
    api: Client, params: dict[str, str], field: str
) -> None:
    assert_problem(await api.get(EVENTS, params=params, headers=HEADERS), 400, field)


async def test_another_tenants_event_is_404(api: Client) -> None:
    receiver = await make_receiver(api)
    ident = await record(api, receiver)
    assert_problem(await api.get(f"{EVENTS}/{ident}", headers=OTHER_HEADERS), 404)
    assert (await api.get(EVENTS, headers=OTHER_HEADERS)).json()["data"] == []
    assert_problem(await api.get(f"{EVENTS}/nope", headers=HEADERS), 404)
