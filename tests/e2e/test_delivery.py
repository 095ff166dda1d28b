"""Webhook delivery by real processes: `waypost serve` in-process, and `waypost worker`."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks import Webhook

from tests.e2e.conftest import ServerProcess, cli, free_port
from tests.e2e.delivery_support import (
    DELIVERY_ENV,
    WorkerProcess,
    subscribe,
    tenant_with_receiver,
)
from tests.integration.loopback_targets import Received, loopback_target

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clients")]


@pytest.fixture
def clients() -> Iterator[None]:
    from tests.e2e.test_api import Api

    yield
    while Api.opened:
        Api.opened.pop().close()


def wait_for(requests: list[Received], count: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while len(requests) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(requests) >= count, f"{len(requests)} of {count} arrived"


def test_serve_delivers_in_its_own_process(
    server_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    server = ServerProcess({**server_env, **DELIVERY_ENV}, tmp_path / "server.log")
    try:
        server.wait_ready()
        api, receiver = tenant_with_receiver(server.url, server.bootstrap_key())
        with loopback_target() as hook:
            ident = subscribe(api, hook.url(), filter={"types": ["ci.build"]})
            secret = api.get(f"/api/v1/subscriptions/{ident}/secret")["data"]["secret"]
            event = api.post("/api/v1/events", api.event(receiver))["data"]
            wait_for(hook.requests, 1)
        [received] = hook.requests
        body = Webhook(secret).verify(received.body, dict(received.headers))
        assert body["data"]["events"][0]["id"] == event
    finally:
        assert server.stop() == 0, server.output()


def test_a_worker_delivers_for_a_server_that_does_not_and_stops_gracefully(
    server_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    env = {**server_env, **DELIVERY_ENV}
    server = ServerProcess({**env, "WAYPOST__DELIVERY__IN_PROCESS": "false"}, tmp_path / "s.log")
    worker: WorkerProcess | None = None
    try:
        server.wait_ready()
        api, receiver = tenant_with_receiver(server.url, server.bootstrap_key())
        with loopback_target() as hook:
            ident = subscribe(api, hook.url(), filter={"types": ["ci.build"]})
            events = [api.post("/api/v1/events", api.event(receiver))["data"] for _ in range(3)]
            time.sleep(1.0)
            assert hook.requests == []  # the server sends nothing itself
            port = free_port()
            worker = WorkerProcess(env, tmp_path / "w.log", "--metrics-port", str(port))
            worker.wait_ready()
            wait_for(hook.requests, 3)
            counted = 'waypost_deliveries_total{outcome="succeeded"} 3.0'
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # counted once the outcome is written
                scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
                if counted in scraped:
                    break
                time.sleep(0.1)
            assert counted in scraped
            started = time.monotonic()
            assert worker.stop() == 0, worker.output()
            assert time.monotonic() - started < 10
        got = sorted(json.loads(r.body)["data"]["events"][0]["id"] for r in hook.requests)
        assert got == sorted(events)
        listed = api.get(
            f"/api/v1/subscriptions/{ident}/deliveries", params={"status": "succeeded"}
        )
        assert len(listed["data"]) == 3
    finally:
        if worker is not None:
            worker.stop()
        assert server.stop() == 0, server.output()


def test_a_bad_delivery_setting_stops_the_start_and_names_it(tmp_path: pathlib.Path) -> None:
    env = {
        "WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 'w.db'}",
        "WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "5,never",
    }
    for command in ("worker", "serve"):
        done = cli(command, env=env, check=False)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS" in done.stderr
    done = cli(
        "worker",
        env={
            **env,
            "WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "5",
            "WAYPOST__DELIVERY__ALLOWED_NETWORKS": "lan",
        },
        check=False,
    )
    assert done.returncode == 2
    assert "delivery.allowed_networks" in done.stderr
