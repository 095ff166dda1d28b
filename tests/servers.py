"""Pytest plugin: real PostgreSQL and Redis servers, started once per test session.

Load it with ``pytest_plugins = ["tests.servers"]`` (or ``-p tests.servers``).

Fixtures
--------
``postgres_server`` (session)  -> :class:`PostgresServer`, a throwaway PostgreSQL 15 cluster
``postgres_url``    (session)  -> ``postgresql://postgres@127.0.0.1:PORT/waypost``
``fresh_database``  (function) -> URL of a new, empty database, dropped after the test
``postgres_replica`` (session) -> :class:`ReplicaServer`, a streaming standby of that cluster
                                 (``pg_basebackup -R``), which tests may stop and start
``redis_url``       (session)  -> ``redis://127.0.0.1:PORT/0``
``redis_db``        (function) -> ``redis_url``, flushed (empty) before the test

URLs work as they are with asyncpg and redis-py; SQLAlchemy wants the driver named:
``url.replace("postgresql://", "postgresql+asyncpg://", 1)``.

A missing server binary skips the dependent tests with a loud reason, or fails them when
``WAYPOST_REQUIRE_SERVICES=1`` (CI). Servers run as direct children of the test process,
in their own session (a Ctrl-C at the terminal does not reach them; teardown stops them)
and, where util-linux ``setpriv`` exists, with a parent-death signal, so that even a killed
pytest leaves no server running. Under pytest-xdist every worker starts its own servers.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg
import pytest

REQUIRE_SERVICES_ENV = "WAYPOST_REQUIRE_SERVICES"

POSTGRES_BINARIES = ("initdb", "postgres")
POSTGRES_INSTALL_HINT = (
    "install PostgreSQL 15 server binaries (Debian: `apt-get install postgresql-15`, then "
    "put /usr/lib/postgresql/15/bin on PATH) so that `initdb` and `postgres` are on PATH"
)
POSTGRES_OS_USER = "postgres"
POSTGRES_SUPERUSER = "postgres"
SESSION_DATABASE = "waypost"

REDIS_BINARIES = ("redis-server",)
REDIS_INSTALL_HINT = "install Redis (Debian: `apt-get install -y redis-server`)"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Verdict:
    """What to do about a service whose prerequisites were looked for."""

    action: Literal["start", "skip", "fail"]
    reason: str = ""


def services_required(env: Mapping[str, str]) -> bool:
    """Whether ``WAYPOST_REQUIRE_SERVICES`` asks for missing servers to be failures."""
    return env.get(REQUIRE_SERVICES_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def service_verdict(
    service: str, missing: Sequence[str], install_hint: str, env: Mapping[str, str]
) -> Verdict:
    """Start the service when nothing is missing; else skip, or fail when services are required.

    Pure: ``missing`` names what was not found (binaries, an OS user), ``env`` is the environment.
    """
    if not missing:
        return Verdict("start")
    required = services_required(env)
    reason = (
        f"{service} NOT AVAILABLE: missing {', '.join(missing)}; to run these tests, "
        f"{install_hint}."
    )
    if required:
        reason += f" ({REQUIRE_SERVICES_ENV}=1 makes a missing server a failure.)"
        return Verdict("fail", reason)
    reason += f" (Skipped; {REQUIRE_SERVICES_ENV}=1 would make this a failure.)"
    return Verdict("skip", reason)


def missing_binaries(binaries: Sequence[str], path: str | None = None) -> list[str]:
    """The names in ``binaries`` that are not executables on ``path`` (default: $PATH)."""
    return [f"`{name}`" for name in binaries if shutil.which(name, path=path) is None]


def _require(service: str, missing: Sequence[str], install_hint: str) -> None:
    verdict = service_verdict(service, missing, install_hint, os.environ)
    if verdict.action == "skip":
        pytest.skip(verdict.reason)
    if verdict.action == "fail":
        pytest.fail(verdict.reason, pytrace=False)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_root() -> bool:
    return os.geteuid() == 0


def _launcher(pdeathsig: str, as_user: str | None) -> list[str]:
    """Command prefix: drop to ``as_user`` and die with the test process where possible.

    ``setpriv`` execs in place (no intermediate process), so the server is our direct child
    and ``Popen.pid`` is the server's pid. Without setpriv (non-Linux) we run the server
    directly, which is only possible without a user switch.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if as_user is not None:
            raise RuntimeError("switching user needs util-linux `setpriv`")
        return []
    cmd = [setpriv, f"--pdeathsig={pdeathsig}"]
    if as_user is not None:
        cmd += [f"--reuid={as_user}", f"--regid={as_user}", "--init-groups"]
    return [*cmd, "--"]


OWNER_FILE = "owner.pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_tempdir(prefix: str) -> Path:
    """A fresh temp dir marked with our pid, after sweeping dirs left by dead sessions.

    A killed pytest cannot run its teardown: its servers die with it (parent-death signal)
    but their directories stay behind until the next session removes them here.
    """
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{prefix}*"):
        try:
            owner = int((stale / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up by another process
        if not _pid_alive(owner):
            shutil.rmtree(stale, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    return root


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:]


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal ``proc`` and reap it; escalate to SIGKILL when it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def _run_in_thread(statements: Sequence[str], dsn: str) -> None:
    """Run admin SQL with asyncpg on a private event loop in a private thread.

    A thread keeps this independent of whatever event loop the test runner holds.
    """
    errors: list[BaseException] = []

    async def execute() -> None:
        conn = await asyncpg.connect(dsn, timeout=START_TIMEOUT)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def target() -> None:
        try:
            asyncio.run(execute())
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="waypost-pg-admin", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _fetch_in_thread(query: str, dsn: str) -> object:
    """One value of one query, with asyncpg on a private event loop in a private thread."""
    found: list[object] = []

    async def fetch() -> None:
        conn = await asyncpg.connect(dsn, timeout=START_TIMEOUT)
        try:
            found.append(await conn.fetchval(query))
        finally:
            await conn.close()

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(fetch())
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="waypost-pg-fetch", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return found[0]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_database_sql(name: str) -> str:
    # FILE_COPY copies template0's files (checkpoints are free with fsync=off): several times
    # faster than PG 15's default WAL_LOG strategy, which writes the whole template to WAL.
    return f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0 STRATEGY FILE_COPY"


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A running throwaway cluster: trust auth, loopback only, no durability."""

    port: int
    root: Path
    user: str = POSTGRES_SUPERUSER
    host: str = "127.0.0.1"
    as_user: str | None = None  # the OS user it runs as (root may not run it)

    def url(self, database: str = SESSION_DATABASE) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Run statements (one connection, autocommit) as the superuser."""
        _run_in_thread(statements, self.url(database))

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (from template0) with a unique name; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.execute(_create_database_sql(name))
        return self.url(name)

    def drop_database(self, url_or_name: str) -> None:
        name = url_or_name.rsplit("/", 1)[-1]
        self.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")


@dataclass
class PostgresCluster(PostgresServer):
    """A cluster of the test's own, which it may stop and start again (same port, same data)."""

    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are ended, nothing waits."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT)
            self.proc = None

    def start(self) -> None:
        self.proc = _launch_postgres(self.root, self.as_user, self.port)
        if self.proc is None:
            raise RuntimeError(f"postgres did not start:\n{_log_tail(self.root / 'postgres.log')}")


def _postgres_ready(data: Path) -> bool:
    """postmaster.pid's 8th line says ``ready`` once connections are accepted (PG >= 10);
    a hot standby says ``standby`` once it accepts read-only connections."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() in ("ready", "standby")


def _postgres_command(data: Path, port: int, root: Path) -> list[str]:
    return [
        "postgres",
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(root),  # unix socket directory
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=100",
        "-c",
        "logging_collector=off",
    ]


def _run_postgres(
    data: Path, root: Path, as_user: str | None, log: Path, port: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    """A postgres on `data`, on `port` (0: a free one), once it accepts connections."""
    for attempt in range(1, START_ATTEMPTS + 1):
        if attempt > 1 or not port:
            port = _free_port()
        cmd = [*_launcher("QUIT", as_user), *_postgres_command(data, port, root)]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if _postgres_ready(data):
                return proc, port
            time.sleep(0.01)
        _stop(proc, signal.SIGQUIT)
        if attempt == START_ATTEMPTS:
            raise RuntimeError(
                f"postgres did not become ready (exit code {proc.returncode}):\n{_log_tail(log)}"
            )
    raise AssertionError("unreachable")


def _initdb(root: Path, as_user: str | None) -> None:
    data = root / "data"
    log = root / "postgres.log"
    initdb = [
        *_launcher("KILL", as_user),
        "initdb",
        f"--pgdata={data}",
        f"--username={POSTGRES_SUPERUSER}",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
    with log.open("ab") as out:
        done = subprocess.run(
            initdb, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False, cwd=root
        )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}):\n{_log_tail(log)}")


def _launch_postgres(root: Path, as_user: str | None, port: int) -> subprocess.Popen[bytes] | None:
    """Start `postgres` on the cluster in `root`, on `port`; None when it did not become ready."""
    data = root / "data"
    log = root / "postgres.log"
    # SIGQUIT: immediate shutdown, children included
    cmd = [*_launcher("QUIT", as_user), *_postgres_command(data, port, root)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if _postgres_ready(data):
            return proc
        time.sleep(0.01)
    _stop(proc, signal.SIGQUIT)
    return None


def _start_postgres(root: Path, as_user: str | None) -> tuple[subprocess.Popen[bytes], int]:
    _initdb(root, as_user)
    return _run_postgres(root / "data", root, as_user, root / "postgres.log")


@contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster with an empty database ``waypost`` (also used by bench/
    and by the tests that stop and start one)."""
    missing = missing_binaries(POSTGRES_BINARIES)
    as_user: str | None = None
    if _is_root():
        as_user = POSTGRES_OS_USER
        try:
            pwd.getpwnam(as_user)
        except KeyError:
            missing.append(f"the OS user `{as_user}` (PostgreSQL refuses to run as root)")
        if shutil.which("setpriv") is None:
            missing.append("`setpriv` (util-linux), to run PostgreSQL as another user")
    _require("PostgreSQL", missing, POSTGRES_INSTALL_HINT)

    root = _make_tempdir("waypost-pg-")
    proc: subprocess.Popen[bytes] | None = None
    try:
        if as_user is not None:
            entry = pwd.getpwnam(as_user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        proc, port = _start_postgres(root, as_user)
        server = PostgresCluster(port=port, root=root, as_user=as_user, proc=proc)
        server.execute(_create_database_sql(SESSION_DATABASE))
        yield server
        proc = server.proc
    finally:
        if proc is not None:
            _stop(proc, signal.SIGQUIT)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session, with an empty database ``waypost``."""
    with running_postgres() as server:
        yield server


class ReplicaServer:
    """A hot standby of a `PostgresServer`, streaming from it (``pg_basebackup -R``).

    `stop()` and `start()` take it away and bring it back (same data, a new port: `url`
    follows); `pause_replay()` and `resume_replay()` make it lag on purpose."""

    def __init__(self, primary: PostgresServer) -> None:
        self.primary = primary
        self.root = primary.root
        self.data = self.root / "replica"
        self.log = self.root / "replica.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        backup = [
            *_launcher("KILL", primary.as_user),
            "pg_basebackup",
            f"--pgdata={self.data}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
            f"--host={primary.host}",
            f"--port={primary.port}",
            f"--username={primary.user}",
        ]
        with self.log.open("ab") as out:
            done = subprocess.run(
                backup, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False
            )
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed:\n{_log_tail(self.log)}")
        self.start()

    def start(self) -> None:
        assert self.proc is None, "the replica runs already"
        # the port it had before, when it can (a client's URL stays right)
        self.proc, self.port = _run_postgres(
            self.data, self.root, self.primary.as_user, self.log, self.port
        )

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGQUIT)
            self.proc = None

    def url(self, database_url: str) -> str:
        """The replica's URL of a database of the primary (its URL)."""
        return (
            f"postgresql://{self.primary.user}@{self.primary.host}:{self.port}/"
            + (database_url.rsplit("/", 1)[-1])
        )

    def execute(self, *statements: str) -> None:
        _run_in_thread(
            statements, f"postgresql://{self.primary.user}@127.0.0.1:{self.port}/postgres"
        )

    def pause_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")

    def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the replica has replayed everything the primary wrote so far.

        The target is the WAL's insert position: with `synchronous_commit=off` (these
        clusters) a commit returns before its record is written out, so the write
        position (`pg_current_wal_lsn`) may still be before the commit just made."""
        primary = f"postgresql://{self.primary.user}@127.0.0.1:{self.primary.port}/postgres"
        replica = f"postgresql://{self.primary.user}@127.0.0.1:{self.port}/postgres"
        target = _fetch_in_thread("SELECT pg_current_wal_insert_lsn()::text", primary)
        deadline = time.monotonic() + timeout
        query = f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
        while time.monotonic() < deadline:
            if _fetch_in_thread(query, replica):
                return
            time.sleep(0.02)
        raise AssertionError("the replica did not catch up")


@pytest.fixture(scope="session")
def postgres_replica(postgres_server: PostgresServer) -> Iterator[ReplicaServer]:
    """A streaming standby of the session's PostgreSQL (pg_basebackup -R), for the tests of
    read replicas; a test that stops it starts it again."""
    _require("PostgreSQL replica", missing_binaries(("pg_basebackup",)), POSTGRES_INSTALL_HINT)
    replica = ReplicaServer(postgres_server)
    try:
        yield replica
    finally:
        replica.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/waypost``, shared by the whole session."""
    return postgres_server.url()


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a new empty database for this test alone; dropped (forcibly) afterwards."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


# --------------------------------------------------------------------------- Redis


def redis_command(port: int, *args: str, host: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """Send one RESP command and return the raw first reply line (e.g. ``b"+PONG"``)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


def _launch_redis(root: Path, port: int) -> subprocess.Popen[bytes] | None:
    """Start redis-server on `port`; None when it did not answer PING."""
    log = root / "redis.log"
    cmd = [
        *_launcher("TERM", None),
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(root),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if redis_command(port, "PING", timeout=1.0) == b"+PONG":
                return proc
        except OSError:
            pass
        time.sleep(0.01)
    _stop(proc, signal.SIGTERM)
    return None


def _start_redis(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    for _attempt in range(START_ATTEMPTS):
        port = _free_port()
        proc = _launch_redis(root, port)
        if proc is not None:
            return proc, port
    raise RuntimeError(f"redis-server did not answer PING:\n{_log_tail(root / 'redis.log')}")


@dataclass
class RedisServer:
    """A Redis of the test's own, which it may stop and start again on the same port."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM)
            self.proc = None

    def start(self) -> None:
        self.proc = _launch_redis(self.root, self.port)
        if self.proc is None:
            raise RuntimeError(f"redis-server did not start:\n{_log_tail(self.root / 'redis.log')}")


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A throwaway Redis server of the caller's own (no persistence)."""
    _require("Redis", missing_binaries(REDIS_BINARIES), REDIS_INSTALL_HINT)
    root = _make_tempdir("waypost-redis-")
    server: RedisServer | None = None
    try:
        proc, port = _start_redis(root)
        server = RedisServer(root, port, proc)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a Redis server for the whole session (no persistence)."""
    with running_redis() as server:
        yield server.url


@pytest.fixture
def redis_db(redis_url: str) -> str:
    """``redis_url`` with every database flushed first: the test starts on an empty server."""
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    port = int(host_port.rsplit(":", 1)[1])
    reply = redis_command(port, "FLUSHALL")
    if reply != b"+OK":
        raise RuntimeError(f"FLUSHALL answered {reply!r}")
    return redis_url
