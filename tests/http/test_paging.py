"""Keyset pagination: limits at their bounds, both orders, opaque and checked cursors."""

from __future__ import annotations

import base64

import pytest

from tests.http.conftest import HEADERS, Client, assert_problem, event_body, make_receiver

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
TOTAL = 320


@pytest.fixture
async def stored(api: Client) -> list[str]:
    """TOTAL events, ids in the order they were recorded (ascending)."""
    receiver = await make_receiver(api)
    ids: list[str] = []
    for start in range(0, TOTAL, 160):
        events = [event_body(receiver, payload={"build": i}) for i in range(start, start + 160)]
        answer = await api.post("/api/v1/events/batch", json={"events": events}, headers=HEADERS)
        assert answer.status_code == 201
        ids.extend(answer.json()["data"])
    return ids


async def walk(api: Client, order: str, limit: int) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    params: dict[str, str | int] = {"order": order, "limit": limit}
    while True:
        answer = await api.get(EVENTS, params=params, headers=HEADERS)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages += 1
        assert len(body["data"]) <= limit
        seen.extend(e["id"] for e in body["data"])
        if body["next_cursor"] is None:
            return seen, pages
        params["cursor"] = body["next_cursor"]


@pytest.mark.parametrize(("order", "limit"), [("desc", 50), ("asc", 64), ("desc", 320)])
async def test_walks_every_event_once_in_order(
    api: Client, stored: list[str], order: str, limit: int
) -> None:
    seen, pages = await walk(api, order, limit)
    assert seen == (stored if order == "asc" else stored[::-1])
    assert pages == -(-TOTAL // limit)  # the last full page has no cursor


async def test_default_page_is_50_newest_first(api: Client, stored: list[str]) -> None:
    body = (await api.get(EVENTS, headers=HEADERS)).json()
    assert [e["id"] for e in body["data"]] == stored[::-1][:50]
    assert isinstance(body["next_cursor"], str)


@pytest.mark.parametrize(("limit", "status", "count"), [(1, 200, 1), (1000, 200, TOTAL)])
async def test_limit_bounds_pass(
    api: Client, stored: list[str], limit: int, status: int, count: int
) -> None:
    answer = await api.get(EVENTS, params={"limit": limit}, headers=HEADERS)
    assert answer.status_code == status
    assert len(answer.json()["data"]) == count
    assert (answer.json()["next_cursor"] is None) == (count == TOTAL)


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "1.5", ""])
async def test_limit_out_of_bounds_is_400(api: Client, limit: str) -> None:
    assert_problem(await api.get(EVENTS, params={"limit": limit}, headers=HEADERS), 400, "limit")


async def test_cursor_is_refused_when_tampered_reordered_or_foreign(
    api: Client, stored: list[str]
) -> None:
    cursor = (await api.get(EVENTS, params={"limit": 10}, headers=HEADERS)).json()["next_cursor"]
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[len(raw) // 2] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    truncated = cursor[:-4]
    for bad in (tampered, truncated, "", "%%%", "AAAA", cursor + "x"):
        answer = await api.get(EVENTS, params={"cursor": bad}, headers=HEADERS)
        assert_problem(answer, 400, "cursor")
    reordered = await api.get(EVENTS, params={"cursor": cursor, "order": "asc"}, headers=HEADERS)
    assert "order" in assert_problem(reordered, 400, "cursor")["errors"][0]["message"]
    foreign = await api.get("/api/v1/receivers", params={"cursor": cursor}, headers=HEADERS)
    assert_problem(foreign, 400, "cursor")
    fine = await api.get(EVENTS, params={"cursor": cursor, "limit": 10}, headers=HEADERS)
    assert [e["id"] for e in fine.json()["data"]] == stored[::-1][10:20]
