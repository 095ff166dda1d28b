"""The watcher under kill -9 and a server restart, while events keep coming.

A watcher process (tests/e2e/watcher_child.py) logs every message it handles. It is
killed with SIGKILL five times at random moments and started again with its checkpoint
file; then the server itself is restarted under it. At the end every message of the
tenant's log is in the handler's log (at least once), none skipped.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping

import pytest
from waypost_client import Client, RetryPolicy

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_api import new_tenant

pytestmark = pytest.mark.slow

CYCLES = 5


class PortServer(ServerProcess):
    """A server on a given port (a restarted server keeps its address)."""

    def __init__(self, env: Mapping[str, str], log: pathlib.Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )


class Producer:
    """Records events, one after the other, until stopped (retrying through restarts)."""

    def __init__(self, url: str, key: str, receiver: str) -> None:
        self.client = Client(url, key, retry=RetryPolicy(attempts=1000, longest=0.5, budget=120))
        self.receiver = receiver
        self.made = 0
        self.failed: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:
            self.failed = exc
            raise

    def _produce(self) -> None:
        while not self._stop.is_set():
            self.client.create_event(
                name="app", version=f"v{self.made}", release="1", platform_id="linux",
                package="rpm", event_receiver_id=self.receiver, success=True,
                payload={"build": self.made},
            )  # fmt: skip
            self.made += 1
            time.sleep(0.02)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)
        self.client.close()


def handled(log: pathlib.Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    pairs = []
    for line in log.read_text().splitlines():
        position, _, ident = line.partition(" ")
        if ident:  # a line cut by a kill has no id yet
            pairs.append((int(position), ident))
    return pairs


@pytest.fixture
def restartable(server_env: dict[str, str], tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    probe = ServerProcess(server_env, tmp_path / "server.log")
    try:
        probe.wait_ready()
        yield probe  # the test restarts it as PortServer(port) and stops what it started
    finally:
        probe.stop()


def test_kill_9_and_a_server_restart_lose_no_message(
    restartable: ServerProcess, server_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    server = restartable
    api = new_tenant(server.url, server.bootstrap_key(), "acme")
    build = api.receiver("build")
    checkpoint, log = tmp_path / "watch.position", tmp_path / "handled.log"

    errors = (tmp_path / "watcher.err").open("ab")

    def watcher() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.watcher_child", server.url, api.key,
             str(checkpoint), str(log)],
            stderr=errors,
        )  # fmt: skip

    rng = random.Random(7)
    with Producer(server.url, api.key, build) as producer:
        for _ in range(CYCLES):
            child = watcher()
            time.sleep(rng.uniform(1.0, 2.0))
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        child = watcher()
        time.sleep(1.5)
        assert server.stop() == 0
        server = PortServer(server_env, tmp_path / "server.log", server.port)
        server.wait_ready()
        time.sleep(2)  # events keep coming after the restart
    try:
        with Client(server.url, api.key) as sdk:
            everything = [(m.position, m.id) for m in sdk.messages(0)]
        last = everything[-1][0]
        deadline = time.monotonic() + 60
        while max((p for p, _ in handled(log)), default=0) < last:
            assert time.monotonic() < deadline, "the watcher did not catch up"
            assert child.poll() is None, (tmp_path / "watcher.err").read_text()[-2000:]
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
        server.stop()
        errors.close()
    assert producer.failed is None, producer.failed
    seen = handled(log)
    missing = set(everything) - set(seen)
    assert not missing, f"{len(missing)} messages never handled: {sorted(missing)[:5]}"
    assert producer.made + 1 == len(everything)  # the receiver's message and every event
    assert int(checkpoint.read_text()) == last
    repeats = len(seen) - len(set(seen))
    print(f"\n{len(everything)} messages, {CYCLES} kills and a server restart: all handled; "
          f"{repeats} handled twice")  # fmt: skip
