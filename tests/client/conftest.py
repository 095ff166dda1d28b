"""The client distribution against the real app, twice: in this process, and as a process.

`app`: the app the bootstrap makes (memory store, seeded platform key), served by
uvicorn in a thread of its own (fast). `serve` (slow): a real `waypost serve` process
on SQLite, whose platform key is the one it prints on its first start. Either way the
SDK speaks real HTTP, so the sync `Client` and the `AsyncClient` are tested the same
way. `acme_key` is an admin key of tenant `acme`, made over the API with the platform
key (X-Tenant), as an operator would.
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

from tests.e2e.conftest import ServerProcess, free_port
from tests.http.conftest import PLATFORM_KEY, make_app, platform_identity

#: No waiting between retries in tests that do not test retries.
QUICK = RetryPolicy(attempts=3, first=0.01, longest=0.05, budget=5)


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
        env = {"WAYPOST__DATABASE__URL": f"sqlite:///{tmp / 'waypost.db'}"}
        process = ServerProcess(env, tmp / "server.log")
        try:
            process.wait_ready()
            yield with_tenants(process.url, process.bootstrap_key())
        finally:
            process.stop()
        return
    identity = anyio.run(platform_identity)
    app = make_app(identity)
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
