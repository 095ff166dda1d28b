"""Crash safety of delivery with real processes: kill -9 at random moments while events are
recorded, on SQLite and on PostgreSQL. Every matching message committed to the log must
reach the target at least once, and a message received twice carries the same webhook-id
and the same body.

Two ways to die: the worker (the server keeps recording), and the server that delivers
in-process (recording and delivering die together). `WAYPOST_CRASH_CYCLES` kills per test
(default 2, so that the suite stays fast; the issue's full count: WAYPOST_CRASH_CYCLES=10).
`WAYPOST_CRASH_REPORT=<file>` appends each run's figures there as a JSON line.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.delivery_support import (
    DELIVERY_ENV,
    WorkerProcess,
    committed_message_ids,
    subscribe,
    tenant_with_receiver,
)
from tests.integration.loopback_targets import Received, loopback_target

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clients")]

CYCLES = int(os.environ.get("WAYPOST_CRASH_CYCLES", "2"))


@pytest.fixture
def clients() -> Iterator[None]:
    from tests.e2e.test_api import Api

    yield
    while Api.opened:
        Api.opened.pop().close()


class Load:
    """Records events in a thread, as fast as the server answers, at whatever URL it is."""

    def __init__(self, base: Callable[[], str], key: str, receiver: str) -> None:
        self._base = base
        self._key = key
        self._receiver = receiver
        self._stop = threading.Event()
        self.answered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = {
                "name": "app",
                "version": "1.0",
                "release": str(n % 7),
                "platform_id": "x86_64",
                "package": "rpm",
                "description": "",
                "payload": {"build": n},
                "success": True,
                "event_receiver_id": self._receiver,
            }
            try:
                answer = httpx.post(
                    f"{self._base()}/api/v1/events",
                    json=body,
                    headers={"Authorization": f"Bearer {self._key}"},
                    timeout=5,
                )
                if answer.status_code == 201:
                    self.answered += 1
                else:
                    self.failed += 1
            except httpx.HTTPError:
                self.failed += 1
                time.sleep(0.05)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def check(name: str, requests: list[Received], expected: list[str], cycles: int) -> dict[str, Any]:
    """Every expected message arrived; duplicates are the same message; the figures.

    A request torn by the kill (its body shorter than its Content-Length: the process died
    while sending it) is no delivery: no receiver could verify it."""
    whole = [r for r in requests if len(r.body) == int(_headers(r).get("content-length", -1))]
    torn = len(requests) - len(whole)
    requests = whole
    ids = [_headers(r)["webhook-id"] for r in requests]
    bodies: dict[str, bytes] = {}
    for ident, received in zip(ids, requests, strict=True):
        assert json.loads(received.body)["id"] == ident  # the webhook-id is the message id
        assert bodies.setdefault(ident, received.body) == received.body
    counts = Counter(ids)
    lost = sorted(set(expected) - set(counts))
    duplicates = sum(n - 1 for n in counts.values())
    figures = {
        "test": name,
        "cycles": cycles,
        "messages": len(expected),
        "deliveries": len(requests),
        "duplicates": duplicates,
        "duplicate_rate": round(duplicates / max(1, len(expected)), 4),
        "lost": len(lost),
        "torn": torn,
    }
    report = os.environ.get("WAYPOST_CRASH_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(json.dumps(figures) + "\n")
    print(figures)
    assert not lost, f"{len(lost)} messages never arrived: {lost[:5]}"
    assert len(expected) > 0
    return figures


def _headers(received: Received) -> dict[str, str]:
    return {name.lower(): value for name, value in received.headers}


def wait_all(
    requests: list[Received], expected: Callable[[], list[str]], seconds: float
) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        wanted = expected()
        got = {_headers(r)["webhook-id"] for r in list(requests)}
        if set(wanted) <= got or time.monotonic() > deadline:
            return wanted
        time.sleep(0.5)


def test_kill_9_the_worker_while_events_are_recorded(
    server_env: dict[str, str], tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    env = {**server_env, **DELIVERY_ENV}
    server = ServerProcess({**env, "WAYPOST__DELIVERY__IN_PROCESS": "false"}, tmp_path / "s.log")
    rng = random.Random(request.node.name)
    try:
        server.wait_ready()
        api, receiver = tenant_with_receiver(server.url, server.bootstrap_key())
        with loopback_target() as hook:
            subscribe(api, hook.url(), filter={"types": ["ci.build"]})
            with Load(lambda: server.url, api.key, receiver):
                for cycle in range(CYCLES):
                    worker = WorkerProcess(env, tmp_path / f"w{cycle}.log")
                    worker.wait_ready()
                    time.sleep(rng.uniform(0.3, 2.0))
                    worker.kill()
            final = WorkerProcess(env, tmp_path / "final.log")
            try:
                final.wait_ready()
                expected = wait_all(
                    hook.requests,
                    lambda: committed_message_ids(server.url, api.key, "ci.build"),
                    120,
                )
            finally:
                assert final.stop() == 0, final.output()
            check(
                f"worker/{server_env['WAYPOST__DATABASE__URL'].split(':')[0]}",
                list(hook.requests),
                expected,
                CYCLES,
            )
    finally:
        assert server.stop() == 0, server.output()


def test_kill_9_the_server_that_delivers_in_process(
    server_env: dict[str, str], tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    env = {**server_env, **DELIVERY_ENV}
    rng = random.Random(request.node.name)
    current = {"server": ServerProcess(env, tmp_path / "s0.log")}
    try:
        current["server"].wait_ready()
        api, receiver = tenant_with_receiver(
            current["server"].url, current["server"].bootstrap_key()
        )
        with loopback_target() as hook:
            subscribe(api, hook.url(), filter={"types": ["ci.build"]})
            with Load(lambda: current["server"].url, api.key, receiver):
                for cycle in range(CYCLES):
                    time.sleep(rng.uniform(0.3, 2.0))
                    current["server"].proc.kill()
                    current["server"].proc.wait()
                    current["server"].stop()
                    current["server"] = ServerProcess(env, tmp_path / f"s{cycle + 1}.log")
                    current["server"].wait_ready()
            expected = wait_all(
                hook.requests,
                lambda: committed_message_ids(current["server"].url, api.key, "ci.build"),
                120,
            )
            backend = server_env["WAYPOST__DATABASE__URL"].split(":")[0]
            check(f"server/{backend}", list(hook.requests), expected, CYCLES)
    finally:
        assert current["server"].stop() == 0, current["server"].output()
