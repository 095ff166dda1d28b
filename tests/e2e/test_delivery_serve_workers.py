"""`serve --workers 2` with delivery in process (the default): two processes each run a
dispatcher and deliverers on one database, and every message is delivered once (no
crash here, so no at-least-once duplicate either). SQLite's single writer and
PostgreSQL's fenced `SKIP LOCKED` claim are what make it so; the dispatch checkpoint's
compare-and-set keeps two dispatchers from making a message's delivery twice."""

from __future__ import annotations

import pathlib
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ServerProcess, database_url, free_port
from tests.e2e.delivery_support import DELIVERY_ENV, subscribe, tenant_with_receiver
from tests.integration.loopback_targets import Answer, Received, loopback_target

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clients")]

EVENTS = 50
MASTER_KEY = "ZTJlLXRlc3RzLW9ubHktbWFzdGVyLWtleS0wMDAwMDAwMDE"


@pytest.fixture
def clients() -> Iterator[None]:
    from tests.e2e.test_api import Api

    yield
    while Api.opened:
        Api.opened.pop().close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_serving_processes_deliver_each_message_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    if backend == "postgres":
        request.applymarker(pytest.mark.postgres)
    env = {
        "WAYPOST__DATABASE__URL": database_url(backend, request, tmp_path),
        "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY,
        **DELIVERY_ENV,
        "WAYPOST__DELIVERY__CONCURRENCY": "8",
    }
    received: list[str] = []
    lock = threading.Lock()

    def answer(got: Received) -> Answer:
        ident = {k.lower(): v for k, v in got.headers}["webhook-id"]
        time.sleep(0.01)  # long enough for overlaps to show, were there any
        with lock:
            received.append(ident)
        return Answer(200)

    server = ServerProcess(env, tmp_path / "serve.log", "--workers", "2", port=free_port())
    try:
        server.wait_ready(60)
        api, receiver = tenant_with_receiver(server.url, server.bootstrap_key())
        with loopback_target() as hook:
            hook.answer = answer
            subscribe(api, hook.url(), filter={"types": ["ci.build"]})
            for n in range(EVENTS):  # one by one, round robin over the two processes
                api.post("/api/v1/events", api.event(receiver, release=str(n)))
            deadline = time.monotonic() + 120
            while len(set(received)) < EVENTS and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)  # anything sent twice would show now
    finally:
        code = server.stop()
    assert code == 0, server.output()
    counts = Counter(received)
    assert len(counts) == EVENTS, server.output()
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert log.count("delivery started (process") == 2, log  # both processes delivered
