"""Helpers of the delivery end-to-end tests: worker processes, a recording target, and a
tenant with a subscription, made over the API the way a user makes them."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.test_api import Api, new_tenant

#: Loopback targets are allowed; attempts are short so leases lapse soon after a kill.
DELIVERY_ENV = {
    "WAYPOST__DELIVERY__ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    "WAYPOST__DELIVERY__REQUIRE_HTTPS": "false",
    "WAYPOST__DELIVERY__TIMEOUT_SECONDS": "2",
    "WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "0.5,1,1,2,2,5,5,5,5,5",
    "WAYPOST__DELIVERY__POLL_SECONDS": "0.05",
}


class WorkerProcess:
    """One `waypost worker` child process; `stop()` sends SIGTERM and waits."""

    def __init__(self, env: Mapping[str, str], log: pathlib.Path, *args: str) -> None:
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "worker", *args],
            env={**os.environ, **env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.output()}")
            if "waypost: delivering" in self.log.read_text(errors="replace"):  # the whole log
                return
            time.sleep(0.05)
        raise AssertionError(f"worker not delivering after {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no stop, no cleanup, whatever it was doing."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")[-6000:]


@dataclass
class Hook:
    """What a recording target received: (webhook-id, message id, arrival time) per request."""

    answer_status: int = 200
    got: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def subscribe(api: Api, url: str, **over: Any) -> str:
    ident: str = api.post("/api/v1/subscriptions", {"name": "hooks", "url": url, **over})["data"]
    return ident


def tenant_with_receiver(base: str, platform_key: str) -> tuple[Api, str]:
    api = new_tenant(base, platform_key, "acme")
    return api, api.receiver("build")


def committed_message_ids(base: str, key: str, message_type: str) -> list[str]:
    """Every message of the type the tenant's log holds, read back over the live tail."""
    found: list[str] = []
    answer = httpx.get(
        f"{base}/api/v1/messages",
        params={"after": "0", "follow": "false"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    import json

    for line in answer.text.splitlines():
        if line.startswith("data: "):
            message = json.loads(line.removeprefix("data: "))
            if message["type"] == message_type:
                found.append(message["id"])
    return found
