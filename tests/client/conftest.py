"""The client distribution against the real app, twice: in this process, and as a process.

`app`: the app the bootstrap makes (memory store, seeded platform key, the system
clock), served by uvicorn in a thread of its own (fast). `serve` (slow): a real
`waypost serve` process on SQLite, whose platform key is the one it prints on its first
start. Either way the SDK speaks real HTTP, so the sync `Client` and the `AsyncClient`
are tested the same way. `acme_key` is an admin key of tenant `acme`, made over the
API with the platform key (X-Tenant), as an operator would.

Both deliver webhooks in process, to loopback targets (`DELIVERY_ENV`), with one quick
retry before a delivery is dead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
import uvicorn
from waypost_client import Client, RetryPolicy

from adapters.system import SystemClock
from entrypoints.bootstrap import create_app
from entrypoints.settings import DeliverySettings
from tests.e2e.conftest import ServerProcess, free_port
from tests.http.conftest import FAST_HASHER, PLATFORM_KEY, platform_identity, settings

#: No waiting between retries in tests that do not test retries.
QUICK = RetryPolicy(attempts=3, first=0.01, longest=0.05, budget=5)
#: Webhooks to loopback targets, one retry 0.2 s after a failure (then dead).
DELIVERY = DeliverySettings(
    in_process=True, allowed_networks=["127.0.0.0/8"], retry_schedule_seconds=[0.2]
)
DELIVERY_ENV = {
    "WAYPOST__DELIVERY__ALLOWED_NETWORKS": "127.0.0.0/8",
    "WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "0.2",
}


@dataclass
class Served:
    url: str
    platform_key: str
    acme_key: str
    globex_key: str

    def client(self, key: str | None = None, **over: object) -> Client:
        return Client(self.url, key or self.acme_key, retry=QUICK, **over)  # type: ignore[arg-type]


class ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test's thread owns the signals
        pass


@pytest.fixture(scope="module", params=["app", pytest.param("serve", marks=pytest.mark.slow)])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    if request.param == "serve":
        tmp = tmp_path_factory.mktemp("serve")
        env = {"WAYPOST__DATABASE__URL": f"sqlite:///{tmp / 'waypost.db'}", **DELIVERY_ENV}
        process = ServerProcess(env, tmp / "server.log")
        try:
            process.wait_ready()
            yield with_tenants(process.url, process.bootstrap_key())
        finally:
            process.stop()
        return
    identity = anyio.run(platform_identity)
    app = create_app(
        settings(delivery=DELIVERY), clock=SystemClock(), identity=identity, hasher=FAST_HASHER
    )
    port = free_port()
    server = ThreadServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="waypost-test-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield with_tenants(url, PLATFORM_KEY)
    finally:
        server.should_exit = True
        thread.join(30)


def with_tenants(url: str, platform_key: str) -> Served:
    keys = {}
    with Client(url, platform_key, retry=QUICK) as platform:
        for slug in ("acme", "globex"):
            platform.create_tenant(slug, slug.title())
            with Client(url, platform_key, act_as=slug, retry=QUICK) as admin:
                keys[slug] = admin.create_api_key("tests", "admin").key
    return Served(url, platform_key, keys["acme"], keys["globex"])


@pytest.fixture
def acme(served: Served) -> Iterator[Client]:
    with served.client() as client:
        yield client


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


__all__ = ["QUICK", "Served", "httpx", "wait_until"]
