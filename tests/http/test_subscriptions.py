"""The Subscriptions routes of API.md: shapes, refusals, secrets, and a webhook end to end."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from litestar import Litestar
from standardwebhooks import Webhook

from core.domain.messages import decode_message
from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    Client,
    assert_problem,
    make_receiver,
    record,
)
from tests.integration.loopback_targets import Received, loopback_target

pytestmark = pytest.mark.anyio

PATH = "/api/v1/subscriptions"
URL = "https://hooks.example.com/in"


async def subscribe(api: Client, **over: Any) -> str:
    answer = await api.post(PATH, json={"name": "hooks", "url": URL, **over}, headers=HEADERS)
    assert answer.status_code == 201, answer.text
    ident: str = answer.json()["data"]
    assert answer.headers["location"] == f"{PATH}/{ident}"
    return ident


async def test_create_and_read(api: Client) -> None:
    ident = await subscribe(
        api,
        description="deploys",
        filter={"types": ["waypost.group.completed"], "package": "rpm", "success": True},
        ordering="artifact",
    )
    answer = await api.get(f"{PATH}/{ident}", headers=HEADERS)
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert set(data) == {
        "id",
        "name",
        "url",
        "description",
        "enabled",
        "filter",
        "ordering",
        "created_at",
        "updated_at",
        "disabled_reason",
    }
    assert data["filter"] == {
        "types": ["waypost.group.completed"],
        "package": "rpm",
        "success": True,
    }
    assert (data["enabled"], data["ordering"], data["disabled_reason"]) == (True, "artifact", None)
    assert "secret" not in answer.text
    assert "whsec_" not in answer.text


async def test_create_defaults(api: Client) -> None:
    data = (await api.get(f"{PATH}/{await subscribe(api)}", headers=HEADERS)).json()["data"]
    assert (data["filter"], data["ordering"], data["description"], data["enabled"]) == (
        {},
        "none",
        "",
        True,
    )


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "x"}, 400, "/url"),
        ({"name": "x", "url": URL, "colour": "red"}, 400, "/colour"),
        ({"name": "x", "url": URL, "filter": {"typo": []}}, 400, "/filter/typo"),
        ({"name": "x", "url": URL, "ordering": "fifo"}, 400, "/ordering"),
        ({"name": "x", "url": 7}, 400, "/url"),
        ({"name": "", "url": URL}, 422, "/name"),
        ({"name": "x", "url": "ftp://hooks.example.com/"}, 422, "/url"),
        ({"name": "x", "url": "https://127.0.0.1/"}, 422, "/url"),
        ({"name": "x", "url": "https://[::ffff:10.0.0.1]/"}, 422, "/url"),
        ({"name": "x", "url": "https://2130706433/"}, 422, "/url"),
        ({"name": "x", "url": "https://169.254.169.254/latest"}, 422, "/url"),
        ({"name": "x", "url": URL, "filter": {"subjects": ["nope"]}}, 422, "/filter/subjects/0"),
        ({"name": "x", "url": URL, "filter": {"types": []}}, 422, "/filter/types"),
    ],
)
async def test_refusals(api: Client, body: dict[str, Any], status: int, field: str) -> None:
    answer = await api.post(PATH, json=body, headers=HEADERS)
    assert_problem(answer, status, field)


async def test_list_pages_and_is_the_tenants_own(api: Client) -> None:
    made = [await subscribe(api) for _ in range(3)]
    first = (await api.get(PATH, params={"limit": 2}, headers=HEADERS)).json()
    assert [s["id"] for s in first["data"]] == made[::-1][:2]
    rest = await api.get(PATH, params={"limit": 2, "cursor": first["next_cursor"]}, headers=HEADERS)
    assert [s["id"] for s in rest.json()["data"]] == made[:1]
    assert rest.json()["next_cursor"] is None
    theirs = (await api.get(PATH, headers=OTHER_HEADERS)).json()["data"]
    assert theirs == []
    assert (await api.get(f"{PATH}/{made[0]}", headers=OTHER_HEADERS)).status_code == 404


async def test_patch_and_delete(api: Client) -> None:
    ident = await subscribe(api)
    changed = await api.patch(
        f"{PATH}/{ident}",
        json={"name": "renamed", "enabled": False, "filter": {"success": False}},
        headers=HEADERS,
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["name"], data["enabled"], data["filter"]) == ("renamed", False, {"success": False})
    assert_problem(
        await api.patch(f"{PATH}/{ident}", json={"url": "ftp://x"}, headers=HEADERS), 422, "/url"
    )
    assert_problem(
        await api.patch(f"{PATH}/{ident}", json={"enabled": "yes"}, headers=HEADERS),
        400,
        "/enabled",
    )
    assert (await api.delete(f"{PATH}/{ident}", headers=HEADERS)).status_code == 204
    assert (await api.delete(f"{PATH}/{ident}", headers=HEADERS)).status_code == 404
    assert (await api.get(f"{PATH}/{ident}", headers=HEADERS)).status_code == 404
    assert (await api.get(f"{PATH}/not-an-id", headers=HEADERS)).status_code == 404


async def test_secret_read_and_rotate(api: Client) -> None:
    ident = await subscribe(api)
    first = await api.get(f"{PATH}/{ident}/secret", headers=HEADERS)
    assert first.status_code == 200
    secret = first.json()["data"]["secret"]
    assert secret.startswith("whsec_")
    rotated = await api.post(
        f"{PATH}/{ident}/secret/rotate", json={"grace_seconds": 60}, headers=HEADERS
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]["secret"]
    assert new != secret
    assert (await api.get(f"{PATH}/{ident}/secret", headers=HEADERS)).json()["data"] == {
        "secret": new
    }
    default = await api.post(f"{PATH}/{ident}/secret/rotate", json={}, headers=HEADERS)
    assert default.status_code == 200
    assert_problem(
        await api.post(
            f"{PATH}/{ident}/secret/rotate", json={"grace_seconds": -1}, headers=HEADERS
        ),
        422,
        "/grace_seconds",
    )
    audit = (await api.get("/api/v1/audit", headers=HEADERS)).json()["data"]
    actions = {(r["action"], r["target"].split("/")[0]) for r in audit}
    target = f"secret:subscription:{ident}"
    assert {
        ("secret.created", target),
        ("secret.accessed", target),
        ("secret.rotated", target),
    } <= actions
    assert "whsec_" not in str(audit)


async def test_ping_replay_redrive_and_deliveries(api: Client) -> None:
    receiver = await make_receiver(api)
    await record(api, receiver)
    ident = await subscribe(api)
    pinged = await api.post(f"{PATH}/{ident}/ping", headers=HEADERS)
    assert pinged.status_code == 202
    assert len(pinged.json()["data"]["message_id"]) == 26
    replayed = await api.post(f"{PATH}/{ident}/replay", json={"after": 0}, headers=HEADERS)
    assert replayed.status_code == 202
    assert replayed.json() == {"data": {"queued": 2}}  # the receiver's creation, the event
    assert_problem(
        await api.post(f"{PATH}/{ident}/replay", json={"after": -1}, headers=HEADERS),
        422,
        "/after",
    )
    redriven = await api.post(f"{PATH}/{ident}/redrive", json={}, headers=HEADERS)
    assert redriven.json() == {"data": {"requeued": 0}}
    bad = await api.post(
        f"{PATH}/{ident}/redrive",
        json={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        headers=HEADERS,
    )
    assert_problem(bad, 422, "/until")
    listed = (await api.get(f"{PATH}/{ident}/deliveries", headers=HEADERS)).json()
    assert [d["message_type"] for d in listed["data"]] == ["ci.build", "waypost.receiver.created"]
    delivery = listed["data"][0]
    assert set(delivery) == {
        "id",
        "subscription_id",
        "message_id",
        "message_type",
        "position",
        "status",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
    }
    assert (delivery["status"], delivery["attempts"]) == ("pending", 0)
    pending = await api.get(
        f"{PATH}/{ident}/deliveries", params={"status": "pending"}, headers=HEADERS
    )
    assert len(pending.json()["data"]) == 2
    dead = await api.get(f"{PATH}/{ident}/deliveries", params={"status": "dead"}, headers=HEADERS)
    assert dead.json()["data"] == []
    odd = await api.get(f"{PATH}/{ident}/deliveries", params={"status": "lost"}, headers=HEADERS)
    assert odd.status_code == 400
    detail = await api.get(f"{PATH}/{ident}/deliveries/{delivery['id']}", headers=HEADERS)
    assert detail.status_code == 200
    assert detail.json()["data"]["attempts"] == []
    missing = await api.get(f"{PATH}/{ident}/deliveries/{ident}", headers=HEADERS)
    assert missing.status_code == 404


# --- a webhook end to end, delivered by the app's own process -------------------------------


async def test_a_webhook_arrives_signed_and_its_attempt_is_recorded(
    delivering_api: tuple[Client, Litestar],
) -> None:
    api, _ = delivering_api
    with loopback_target() as hook:
        ident = await subscribe(api, url=hook.url())
        secret = (await api.get(f"{PATH}/{ident}/secret", headers=HEADERS)).json()["data"]["secret"]
        receiver = await make_receiver(api)
        event_id = await record(api, receiver)
        with anyio.fail_after(20):
            while True:
                listed = (await api.get(f"{PATH}/{ident}/deliveries", headers=HEADERS)).json()
                statuses = [d["status"] for d in listed["data"]]
                if statuses == ["succeeded", "succeeded"]:
                    break
                await anyio.sleep(0.05)
    assert len(hook.requests) == 2
    delivery = listed["data"][0]  # the newest: the event's (the receiver's creation came first)

    def webhook_id(received: Received) -> str:
        return next(v for n, v in received.headers if n.lower() == "webhook-id")

    # the two deliveries may be attempted at once: the event's is found by its id
    [received] = [r for r in hook.requests if webhook_id(r) == delivery["message_id"]]
    headers = {name.lower(): value for name, value in received.headers}
    Webhook(secret).verify(received.body, headers)
    message = decode_message(received.body)
    assert message.data.events[0].id == event_id
    assert headers["webhook-id"] == message.id == delivery["message_id"]
    detail = (await api.get(f"{PATH}/{ident}/deliveries/{delivery['id']}", headers=HEADERS)).json()
    [attempt] = detail["data"]["attempts"]
    assert (attempt["number"], attempt["status_code"], attempt["error"]) == (1, 200, None)
    assert attempt["response_excerpt"] == "ok"
    metrics = (await api.get("/metrics")).text
    assert 'waypost_deliveries_total{outcome="succeeded"} 2.0' in metrics
    assert 'waypost_delivery_lag_seconds_count{stage="first_attempt"} 2.0' in metrics
