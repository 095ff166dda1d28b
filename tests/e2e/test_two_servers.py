"""Two server processes on one database, each combining its concurrent requests (group
commit): a gate whose last successes arrive at the same moment on both fires exactly once,
and every answered event is stored once."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_api import Api, new_tenant

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clients")]

ROUNDS = 10
MEMBERS = 4


def test_two_servers_fire_each_gate_exactly_once(
    server_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    first = ServerProcess(server_env, tmp_path / "first.log")
    first.wait_ready()  # it migrates and makes the first administrator; then the second
    second = ServerProcess(server_env, tmp_path / "second.log")
    try:
        second.wait_ready()
        api = new_tenant(first.url, first.bootstrap_key(), "acme")
        for round_ in range(ROUNDS):
            members = [api.receiver(f"m{round_}x{i}") for i in range(MEMBERS)]
            group = api.post(
                "/api/v1/groups",
                {"name": f"g{round_}", "type": "gate", "version": "1", "description": "",
                 "event_receiver_ids": members},
            )["data"]  # fmt: skip
            release = str(round_)
            key = {"release": release}
            # every member's success, once on each server: all sent at the same moment
            sends = [(server.url, api.event(member, release=release)) for member in members
                     for server in (first, second)]  # fmt: skip
            statuses = send_together(sends, api.key)
            assert statuses == [201] * len(sends)
            fired = api.get(f"/api/v1/groups/{group}/completions", params=api_key(key))["data"]
            assert len(fired) == 1, f"round {round_}: the gate fired {len(fired)} times"
            stored = api.get(
                "/api/v1/events", params={**api_key(key), "limit": 1000}
            )["data"]  # fmt: skip
            assert len(stored) == len(sends)
            # the evidence is one success of each member, the trigger among them
            [completion] = fired
            evidence = {e["id"]: e["event_receiver_id"] for e in stored}
            assert [evidence[i] for i in completion["member_event_ids"]] == members
            assert completion["triggering_event_id"] in evidence
    finally:
        assert first.stop() == 0, first.output()
        assert second.stop() == 0, second.output()


def send_together(sends: list[tuple[str, dict[str, Any]]], key: str) -> list[int]:
    """POST each event to its server, all released at once by a barrier; the statuses."""
    barrier = threading.Barrier(len(sends))
    statuses: list[int] = []

    def send(base: str, body: dict[str, Any]) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            barrier.wait()
            answer = http.post(
                "/api/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=send, args=pair) for pair in sends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.fixture
def clients() -> Iterator[None]:
    yield
    while Api.opened:
        Api.opened.pop().close()


def api_key(key: dict[str, str]) -> dict[str, Any]:
    """The query of an artifact (the NVRPP the events use, with this round's release)."""
    return {"name": "app", "version": "1.0", "platform_id": "x86_64", "package": "rpm", **key}
