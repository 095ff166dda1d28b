"""Two workers on one PostgreSQL: they share the work and never attempt one delivery both."""

from __future__ import annotations

import pathlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.delivery_support import DELIVERY_ENV, WorkerProcess, subscribe, tenant_with_receiver
from tests.integration.loopback_targets import Answer, Received, loopback_target

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.usefixtures("clients")]

EVENTS = 300


@pytest.fixture
def clients() -> Iterator[None]:
    from tests.e2e.test_api import Api

    yield
    while Api.opened:
        Api.opened.pop().close()


def test_two_workers_share_the_work_and_never_attempt_one_delivery_at_once(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    env = {
        "WAYPOST__DATABASE__URL": request.getfixturevalue("fresh_database"),
        "WAYPOST__SECRETS__MASTER_KEY": "ZTJlLXRlc3RzLW9ubHktbWFzdGVyLWtleS0wMDAwMDAwMDE",
        **DELIVERY_ENV,
        "WAYPOST__LOG__LEVEL": "DEBUG",  # one line per attempt (counted below)
        "WAYPOST__LOG__LEVELS": "waypost.sql=INFO",  # not one per statement
        "WAYPOST__DELIVERY__CONCURRENCY": "8",
    }
    server = ServerProcess({**env, "WAYPOST__DELIVERY__IN_PROCESS": "false"}, tmp_path / "s.log")
    workers: list[WorkerProcess] = []
    spans: list[tuple[str, float, float]] = []  # webhook-id, arrived, answered
    lock = threading.Lock()

    def answer(received: Received) -> Answer:
        arrived = time.monotonic()
        time.sleep(0.02)  # long enough for overlaps to show, were there any
        ident = {k.lower(): v for k, v in received.headers}["webhook-id"]
        with lock:
            spans.append((ident, arrived, time.monotonic()))
        return Answer(200)

    try:
        server.wait_ready()
        api, receiver = tenant_with_receiver(server.url, server.bootstrap_key())
        with loopback_target() as hook:
            hook.answer = answer
            subscribe(api, hook.url(), filter={"types": ["ci.build"]})
            workers = [WorkerProcess(env, tmp_path / f"w{i}.log") for i in range(2)]
            for worker in workers:
                worker.wait_ready()
            for n in range(EVENTS // 100):
                batch = [api.event(receiver, release=str(n * 100 + i)) for i in range(100)]
                api.post("/api/v1/events/batch", {"events": batch})
            deadline = time.monotonic() + 120
            while len({s[0] for s in spans}) < EVENTS and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1)  # anything sent twice would show now
        for worker in workers:
            assert worker.stop() == 0, worker.output()
        counts = Counter(ident for ident, _, _ in spans)
        assert len(counts) == EVENTS
        assert max(counts.values()) == 1, "a delivery was attempted twice"
        succeeded = [
            len(re.findall(r"attempt 1: 200\b", worker.log.read_text())) for worker in workers
        ]
        assert sum(succeeded) == EVENTS
        assert min(succeeded) >= EVENTS // 10, f"the work was not shared: {succeeded}"
    finally:
        for worker in workers:
            worker.stop()
        assert server.stop() == 0, server.output()
