"""The SDK's subscription methods and `waypostctl subscription ...` against the real server
(both `served` flavours), delivering to a real loopback target: every method's route and
answer shape, a signed webhook that the independent `standardwebhooks` library verifies,
a delivery that dies and is redriven."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook
from waypost_client import Client, NotFound, Unprocessable
from waypost_client.cli import main as waypostctl

from tests.client.conftest import Served, wait_until
from tests.client.test_sdk import unique
from tests.integration.loopback_targets import Answer, Target, loopback_target

PING = "waypost.subscription.ping"
#: Deliveries run in the served process: generous, the machine is shared.
WITHIN = 30.0


@pytest.fixture
def hook() -> Iterator[Target]:
    with loopback_target() as made:
        yield made


def _headers(target: Target, index: int) -> dict[str, str]:
    return {name.lower(): value for name, value in target.requests[index].headers}


def _deliveries(acme: Client, sid: str, status: str) -> list[str]:
    return [d.id for d in acme.list_deliveries(sid, status=status)]


def test_a_subscription_from_creation_to_deletion(acme: Client, hook: Target) -> None:
    name = unique("hook")
    sid = acme.create_subscription(
        name, hook.url(), description="pings only", filter={"types": [PING]}
    )
    found = acme.get_subscription(sid)
    assert (found.name, found.url, found.description) == (name, hook.url(), "pings only")
    assert found.enabled
    assert found.disabled_reason is None
    assert found.ordering == "none"
    assert found.filter["types"] == [PING]
    assert sid in [s.id for s in acme.list_subscriptions(limit=5)]
    secret = acme.subscription_secret(sid)
    assert secret.startswith("whsec_")

    message = acme.ping(sid)
    wait_until(lambda: hook.requests, WITHIN)
    received = hook.requests[0]
    sent = _headers(hook, 0)
    assert sent["webhook-id"] == message
    Webhook(secret).verify(received.body, sent)
    assert json.loads(received.body)["type"] == PING

    wait_until(lambda: _deliveries(acme, sid, "succeeded"), WITHIN)
    [listed] = list(acme.list_deliveries(sid))
    assert (listed.message_id, listed.message_type, listed.attempts) == (message, PING, 1)
    delivery = acme.get_delivery(sid, listed.id)
    assert delivery.status == "succeeded"
    [attempt] = delivery.attempt_log
    assert attempt.status_code == 200
    assert attempt.response_excerpt == "ok"

    rotated = acme.rotate_subscription_secret(sid, grace_seconds=60)
    assert rotated.startswith("whsec_")
    assert rotated != secret
    assert acme.subscription_secret(sid) == rotated

    assert acme.replay(sid, after=0) >= 1  # the ping at least, delivered again
    wait_until(lambda: len(hook.requests) >= 2, WITHIN)
    again = _headers(hook, 1)
    assert again["webhook-id"] == message  # the same message: the same webhook-id
    Webhook(rotated).verify(hook.requests[1].body, again)
    Webhook(secret).verify(hook.requests[1].body, again)  # the old one, in its grace

    changed = acme.update_subscription(sid, enabled=False, name=f"{name}-off")
    assert (changed.enabled, changed.name) == (False, f"{name}-off")
    with pytest.raises(Unprocessable):
        acme.update_subscription(sid, url="ftp://example.com/hook")
    acme.delete_subscription(sid)
    with pytest.raises(NotFound):
        acme.get_subscription(sid)
    with pytest.raises(NotFound):
        acme.get_delivery(sid, listed.id)


def test_a_dead_delivery_is_redriven(acme: Client, hook: Target) -> None:
    hook.answer = lambda _: Answer(status=500, body=b"broken")
    sid = acme.create_subscription(unique("dies"), hook.url(), filter={"types": [PING]})
    try:
        message = acme.ping(sid)
        # the first attempt and its one retry fail: dead
        wait_until(lambda: _deliveries(acme, sid, "dead"), WITHIN)
        [dead] = _deliveries(acme, sid, "dead")
        attempts = acme.get_delivery(sid, dead).attempt_log
        assert [a.status_code for a in attempts] == [500, 500]
        assert attempts[0].response_excerpt == "broken"
        hook.answer = lambda _: Answer()
        assert acme.redrive(sid, until="2999-01-01T00:00:00Z") == 1
        wait_until(lambda: _deliveries(acme, sid, "succeeded") == [dead], WITHIN)
        assert {_headers(hook, i)["webhook-id"] for i in range(len(hook.requests))} == {message}
        assert acme.redrive(sid) == 0  # nothing dead any more
    finally:
        acme.delete_subscription(sid)


def test_a_subscription_of_another_tenant_is_not_found(served: Served, hook: Target) -> None:
    with served.client() as acme, served.client(served.globex_key) as globex:
        sid = acme.create_subscription(unique("mine"), hook.url())
        try:
            for call in (
                lambda: globex.get_subscription(sid),
                lambda: globex.subscription_secret(sid),
                lambda: globex.ping(sid),
                lambda: list(globex.list_deliveries(sid)),
            ):
                with pytest.raises(NotFound):
                    call()
            assert sid not in [s.id for s in globex.list_subscriptions()]
        finally:
            acme.delete_subscription(sid)


def _ctl(served: Served, capsys: pytest.CaptureFixture[str], *args: str, expect: int = 0) -> object:
    argv = ["--url", served.url, "--api-key", served.acme_key, *args]
    try:
        code = waypostctl(argv)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert code == expect, (args, code, out, err)
    return json.loads(out) if expect == 0 else err


def test_waypostctl_subscription_commands(
    served: Served, acme: Client, hook: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    hook.answer = lambda _: Answer(status=503)
    name = unique("ctl")
    made = _ctl(
        served,
        capsys,
        "subscription", "create", "--name", name, "--url", hook.url(),
        "--filter", json.dumps({"types": [PING]}), "--ordering", "artifact",
    )  # fmt: skip
    assert isinstance(made, dict)
    sid = made["id"]
    try:
        listed = _ctl(served, capsys, "subscription", "list", "--limit", "50")
        assert isinstance(listed, list)
        [mine] = [s for s in listed if s["id"] == sid]
        assert (mine["name"], mine["url"], mine["ordering"]) == (name, hook.url(), "artifact")
        acme.ping(sid)
        wait_until(lambda: _deliveries(acme, sid, "dead"), WITHIN)
        dead = _ctl(served, capsys, "subscription", "deliveries", sid, "--status", "dead")
        assert isinstance(dead, list)
        assert [(d["status"], d["attempts"], d["last_status_code"]) for d in dead] == [
            ("dead", 2, 503)
        ]
        hook.answer = lambda _: Answer()
        assert _ctl(served, capsys, "subscription", "redrive", sid) == {"requeued": 1}
        wait_until(lambda: _deliveries(acme, sid, "succeeded"), WITHIN)
        unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
        err = _ctl(served, capsys, "subscription", "redrive", unknown, expect=1)
        assert "not found" in str(err).lower()
        err = _ctl(served, capsys, "subscription", "deliveries", sid, "--status", "x", expect=2)
        assert "invalid choice" in str(err)
    finally:
        acme.delete_subscription(sid)
