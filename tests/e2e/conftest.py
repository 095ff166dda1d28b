"""The real `waypost` process, started by the test, over real HTTP on loopback."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping

import httpx
import pytest

#: What the server prints on its first start: the first platform administrator's API key.
BOOTSTRAP_KEY = re.compile(r"^(wp_[a-z0-9]{8}_[A-Za-z0-9_-]{43,128})$", re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One `waypost serve` child process; `stop()` sends SIGTERM and waits."""

    def __init__(
        self,
        env: Mapping[str, str],
        log: pathlib.Path,
        *args: str,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = dict(env)
        self.args = args
        self._log_file = log.open("ab")
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(self.port),
             *self.args],
            env={**os.environ, **self.env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        """kill -9: no shutdown of any kind."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """Start the same server again (same port, same settings) after it stopped."""
        assert self.proc.poll() is not None, "still running"
        self.proc = self._spawn()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"server not live after {timeout} s:\n{self.output()}")

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

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def bootstrap_key(self) -> str:
        """The platform administrator's key the server printed on its first start, the way
        an operator reads it off the console."""
        found = BOOTSTRAP_KEY.findall(self.log.read_text(errors="replace"))
        assert len(found) == 1, f"expected one bootstrap key in the output:\n{self.output()}"
        key: str = found[0]
        return key


def cli(*args: str, env: Mapping[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """`waypost ARGS...` as an operator runs it, on the settings of `env`."""
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'waypost.db'}"
    url: str = request.getfixturevalue("fresh_database")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def server_env(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> dict[str, str]:
    """Environment for a server on a fresh database of each backend."""
    backend: str = request.param
    env = {"WAYPOST__DATABASE__URL": database_url(backend, request, tmp_path)}
    if backend == "postgres":
        request.applymarker(pytest.mark.postgres)
        # SQLite in development keeps a generated master key beside its file; every
        # server on PostgreSQL must be given the same one.
        env["WAYPOST__SECRETS__MASTER_KEY"] = "ZTJlLXRlc3RzLW9ubHktbWFzdGVyLWtleS0wMDAwMDAwMDE"
    return env


@pytest.fixture
def server(server_env: dict[str, str], tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    process = ServerProcess(server_env, tmp_path / "server.log")
    try:
        process.wait_ready()
        yield process
    finally:
        code = process.stop()
    assert code == 0, f"server exited {code} on SIGTERM:\n{process.output()}"
