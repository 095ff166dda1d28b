"""The live tail over real HTTP: a message arrives while the stream is open; SIGTERM ends it."""

from __future__ import annotations

import json
import pathlib
import threading
import time
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_api import new_tenant


def test_a_tail_receives_what_commits_while_open_and_a_stop_ends_it(
    server: ServerProcess,
) -> None:
    api = new_tenant(server.url, server.bootstrap_key(), "acme")
    receiver = api.receiver("build")
    received: list[dict[str, object]] = []
    opened = threading.Event()
    arrived = threading.Event()

    def tail() -> None:
        headers = {"Authorization": f"Bearer {api.key}"}
        with httpx.stream(
            "GET", f"{server.url}/api/v1/messages", headers=headers, timeout=30
        ) as answer:
            assert answer.status_code == 200
            opened.set()
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line.removeprefix("data: ")))
                    arrived.set()

    reader = threading.Thread(target=tail, daemon=True)
    reader.start()
    assert opened.wait(10)
    time.sleep(0.5)  # the stream has read the head: it starts now
    event_id = api.post("/api/v1/events", api.event(receiver))["data"]
    assert arrived.wait(10), "the message did not arrive while the stream was open"
    assert received[0]["data"]["events"][0]["id"] == event_id  # type: ignore[index]
    # a graceful stop ends open streams at once rather than waiting out the grace period
    started = time.monotonic()
    assert server.stop() == 0, server.output()
    assert time.monotonic() - started < 10
    reader.join(10)
    assert not reader.is_alive()


@pytest.mark.redis
def test_the_server_publishes_each_tenants_messages_to_its_redis_stream(
    server_env: dict[str, str], redis_db: str, tmp_path: pathlib.Path
) -> None:
    server = ServerProcess({**server_env, "WAYPOST__REDIS__URL": redis_db}, tmp_path / "server.log")
    try:
        server.wait_ready()
        api = new_tenant(server.url, server.bootstrap_key(), "acme")
        receiver = api.receiver("build")
        event_id = api.post("/api/v1/events", api.event(receiver))["data"]
        client = redis.Redis.from_url(redis_db)
        try:
            # a consumer blocks on the stream from its start, as a subscriber would
            deadline = time.monotonic() + 10
            found: list[dict[str, object]] = []
            while len(found) < 2 and time.monotonic() < deadline:
                reply: list[Any] = client.xread(  # type: ignore[assignment]
                    {"waypost:acme:messages": "0-0"}, count=10, block=500
                )
                found = [json.loads(f[b"cloudevent"]) for _, got in reply for _, f in got]
        finally:
            client.close()
        assert [m["type"] for m in found] == ["waypost.receiver.created", "ci.build"]
        assert found[1]["data"]["events"][0]["id"] == event_id  # type: ignore[index]
    finally:
        assert server.stop() == 0, server.output()
