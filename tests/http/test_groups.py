"""Groups: create, read, list, change, delete; the gate's status and its completions."""

from __future__ import annotations

import pytest

from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    Client,
    assert_problem,
    make_receiver,
    record,
)

pytestmark = pytest.mark.anyio

GROUPS = "/api/v1/groups"
KEY = {"name": "app", "version": "1.0", "release": "1", "platform_id": "x86_64", "package": "rpm"}


async def make_group(api: Client, *members: str, name: str = "release", **over: object) -> str:
    body: dict[str, object] = {
        "name": name,
        "type": "gate",
        "version": "1",
        "event_receiver_ids": list(members),
        **over,
    }
    answer = await api.post(GROUPS, json=body, headers=HEADERS)
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"{GROUPS}/{answer.json()['data']}"
    ident: str = answer.json()["data"]
    return ident


async def test_create_read_and_list(api: Client) -> None:
    build, test = await make_receiver(api, "build"), await make_receiver(api, "test")
    one = await make_group(api, build, test, description="Release gate")
    two = await make_group(api, build, name="nightly", enabled=False)
    group = (await api.get(f"{GROUPS}/{one}", headers=HEADERS)).json()["data"]
    assert set(group) == {
        "id",
        "name",
        "type",
        "version",
        "description",
        "enabled",
        "event_receiver_ids",
        "created_at",
        "updated_at",
    }
    assert group["event_receiver_ids"] == [build, test]
    assert group["enabled"] is True
    assert group["description"] == "Release gate"

    async def ids(**params: str) -> list[str]:
        answer = await api.get(GROUPS, params=params, headers=HEADERS)
        assert answer.status_code == 200, answer.text
        return [g["id"] for g in answer.json()["data"]]

    assert await ids() == [two, one]
    assert await ids(order="asc") == [one, two]
    assert await ids(enabled="false") == [two]
    assert await ids(enabled="true", name="release", type="gate", version="1") == [one]
    assert await ids(name="none") == []


async def test_patch_answers_the_changed_group(api: Client) -> None:
    build, test = await make_receiver(api, "build"), await make_receiver(api, "test")
    group = await make_group(api, build)
    answer = await api.patch(
        f"{GROUPS}/{group}",
        json={"enabled": False, "description": "changed", "add_receiver_ids": [test]},
        headers=HEADERS,
    )
    assert answer.status_code == 200
    changed = answer.json()["data"]
    assert (changed["enabled"], changed["description"]) == (False, "changed")
    assert changed["event_receiver_ids"] == [build, test]
    removed = await api.patch(
        f"{GROUPS}/{group}", json={"remove_receiver_ids": [build]}, headers=HEADERS
    )
    assert removed.json()["data"]["event_receiver_ids"] == [test]


async def test_patch_refusals(api: Client) -> None:
    build = await make_receiver(api)
    group = await make_group(api, build)
    path = f"{GROUPS}/{group}"
    assert_problem(await api.patch(path, json={"add_receiver_ids": [build]}, headers=HEADERS), 422)
    unknown = {"add_receiver_ids": ["01ARZ3NDEKTSV4RRFFQ69G5FAV"]}
    assert_problem(await api.patch(path, json=unknown, headers=HEADERS), 422, "/add_receiver_ids/0")
    assert_problem(await api.patch(path, json={"enabled": "no"}, headers=HEADERS), 400, "/enabled")
    missing = f"{GROUPS}/01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert_problem(await api.patch(missing, json={"enabled": False}, headers=HEADERS), 404)


async def test_delete_answers_204_then_404(api: Client) -> None:
    group = await make_group(api, await make_receiver(api))
    answer = await api.delete(f"{GROUPS}/{group}", headers=HEADERS)
    assert answer.status_code == 204
    assert answer.content == b""
    assert_problem(await api.get(f"{GROUPS}/{group}", headers=HEADERS), 404)
    assert_problem(await api.delete(f"{GROUPS}/{group}", headers=HEADERS), 404)


async def test_create_refusals(api: Client) -> None:
    build = await make_receiver(api)
    other = await make_receiver(api, headers=OTHER_HEADERS)
    body = {"name": "g", "type": "gate", "version": "1", "event_receiver_ids": [build, other]}
    assert_problem(await api.post(GROUPS, json=body, headers=HEADERS), 422, "/event_receiver_ids/1")
    body["event_receiver_ids"] = []
    assert_problem(await api.post(GROUPS, json=body, headers=HEADERS), 422)
    body["event_receiver_ids"] = "x"
    assert_problem(await api.post(GROUPS, json=body, headers=HEADERS), 400, "/event_receiver_ids")
    del body["event_receiver_ids"]
    assert_problem(await api.post(GROUPS, json=body, headers=HEADERS), 400, "/event_receiver_ids")


async def test_status_and_completions_follow_the_gate(api: Client) -> None:
    build, test = await make_receiver(api, "build"), await make_receiver(api, "test")
    group = await make_group(api, build, test)
    status_path = f"{GROUPS}/{group}/status"

    status = (await api.get(status_path, params=KEY, headers=HEADERS)).json()["data"]
    assert status == {
        "complete": False,
        "members": [
            {"event_receiver_id": build, "passing": False, "latest_event": None},
            {"event_receiver_id": test, "passing": False, "latest_event": None},
        ],
    }
    built = await record(api, build)
    status = (await api.get(status_path, params=KEY, headers=HEADERS)).json()["data"]
    assert status["complete"] is False
    assert status["members"][0]["passing"] is True
    assert status["members"][0]["latest_event"]["id"] == built
    tested = await record(api, test)
    status = (await api.get(status_path, params=KEY, headers=HEADERS)).json()["data"]
    assert status["complete"] is True

    completions = await api.get(f"{GROUPS}/{group}/completions", headers=HEADERS)
    assert completions.status_code == 200
    [completion] = completions.json()["data"]
    assert completions.json()["next_cursor"] is None
    assert set(completion) == {
        "id",
        "group_id",
        "name",
        "version",
        "release",
        "platform_id",
        "package",
        "triggering_event_id",
        "member_event_ids",
        "completed_at",
    }
    assert completion["group_id"] == group
    assert completion["triggering_event_id"] == tested
    assert sorted(completion["member_event_ids"]) == sorted([built, tested])
    assert {k: completion[k] for k in KEY} == KEY

    # fires again after a failure and a success; filters and pages
    await record(api, test, success=False)
    await record(api, test)
    await record(api, build, version="2.0")
    await record(api, test, version="2.0")
    path = f"{GROUPS}/{group}/completions"
    everything = (await api.get(path, headers=HEADERS)).json()["data"]
    assert len(everything) == 3
    assert [c["version"] for c in everything] == ["2.0", "1.0", "1.0"]
    v1 = (await api.get(path, params={"version": "1.0"}, headers=HEADERS)).json()["data"]
    assert len(v1) == 2
    first = await api.get(path, params={"limit": 2, "order": "asc"}, headers=HEADERS)
    assert [c["id"] for c in first.json()["data"]] == [everything[2]["id"], everything[1]["id"]]
    rest = await api.get(
        path,
        params={"limit": 2, "order": "asc", "cursor": first.json()["next_cursor"]},
        headers=HEADERS,
    )
    assert [c["id"] for c in rest.json()["data"]] == [everything[0]["id"]]


@pytest.mark.parametrize("missing", sorted(KEY))
async def test_status_needs_all_five_parameters(api: Client, missing: str) -> None:
    group = await make_group(api, await make_receiver(api))
    params = {k: v for k, v in KEY.items() if k != missing}
    answer = await api.get(f"{GROUPS}/{group}/status", params=params, headers=HEADERS)
    assert_problem(answer, 400, missing)


async def test_status_refuses_blank_and_overlong_parameters(api: Client) -> None:
    group = await make_group(api, await make_receiver(api))
    params = {**KEY, "name": " ", "package": "p" * 256}
    answer = await api.get(f"{GROUPS}/{group}/status", params=params, headers=HEADERS)
    assert_problem(answer, 422, "name", "package")


async def test_another_tenants_group_is_404_everywhere(api: Client) -> None:
    group = await make_group(api, await make_receiver(api))
    for path in (f"{GROUPS}/{group}", f"{GROUPS}/{group}/completions"):
        assert_problem(await api.get(path, headers=OTHER_HEADERS), 404)
    status = await api.get(f"{GROUPS}/{group}/status", params=KEY, headers=OTHER_HEADERS)
    assert_problem(status, 404)
    patched = await api.patch(f"{GROUPS}/{group}", json={"enabled": False}, headers=OTHER_HEADERS)
    assert_problem(patched, 404)
    assert_problem(await api.delete(f"{GROUPS}/{group}", headers=OTHER_HEADERS), 404)
    assert (await api.get(GROUPS, headers=OTHER_HEADERS)).json()["data"] == []
    assert_problem(await api.get(f"{GROUPS}/bad-id/status", params=KEY, headers=HEADERS), 404)
