"""Several server processes on one PostgreSQL and one Redis, as an operator runs them behind a
load balancer: real `waypost serve` processes over HTTP on loopback.

- the same Idempotency-Key sent round-robin to 2 or 3 processes stores one event, and
  every answer is the first one; a process killed (-9) after its commit and before its
  answer: the retry elsewhere (or after a restart) gets that answer, and one event;
- a rate limit shared by 3 processes admits the configured rate within 10 %, over 10 s,
  while another credential is not affected;
- Redis stopped and started under load: no 5xx, the fallback in metrics and one log
  line, the limits shared again once it is back;
- PostgreSQL stopped and started under load: 503 with Retry-After while it is down,
  201 within 2 s once it is back, the same processes throughout;
- `serve --workers 2`: the first key printed once, both workers serving, a graceful stop.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from entrypoints.http.idempotency import TEST_ANSWER_DELAY_VARIABLE
from tests.e2e.conftest import BOOTSTRAP_KEY, ServerProcess, cli, free_port
from tests.servers import running_postgres, running_redis

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

MASTER_KEY = "ZTJlLXRlc3RzLW9ubHktbWFzdGVyLWtleS0wMDAwMDAwMDE"
EVENT = {
    "name": "app", "version": "1.0", "release": "1", "platform_id": "x86_64", "package": "rpm",
    "description": "", "payload": {"build": 1}, "success": True,
}  # fmt: skip


@dataclass
class Cluster:
    env: dict[str, str]
    database: str
    tmp: pathlib.Path
    key: str  # an administrator of the tenant `acme`
    other_key: str  # a second credential of `acme`
    servers: list[ServerProcess]

    def start(self, count: int, **extra: str) -> list[ServerProcess]:
        started = [
            ServerProcess({**self.env, **extra}, self.tmp / f"server{len(self.servers) + n}.log")
            for n in range(count)
        ]
        self.servers += started
        for server in started:
            server.wait_ready(60)
        return started

    def headers(self, key: str | None = None, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", **more}


def prepare(env: dict[str, str], tmp: pathlib.Path, database: str) -> Cluster:
    """Migrate once and make the credentials with the operator's commands, as the deploy
    how-to says (the servers then start on a ready database)."""
    cli("migrate", env=env)
    cli("admin", "create-tenant", "acme", env=env)
    keys = [
        cli("admin", "create-api-key", "--tenant", "acme", "--role", "admin", "--name", name,
            env=env).stdout.strip()
        for name in ("ci", "other")
    ]  # fmt: skip
    return Cluster(env, database, tmp, keys[0], keys[1], [])


@pytest.fixture
def cluster(fresh_database: str, redis_db: str, tmp_path: pathlib.Path) -> Iterator[Cluster]:
    env = {
        "WAYPOST__DATABASE__URL": fresh_database,
        "WAYPOST__DATABASE__POOL_SIZE": "4",
        "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY,
        "WAYPOST__REDIS__URL": redis_db,
        "WAYPOST__REDIS__PUBLISH_MESSAGES": "false",
        "WAYPOST__REDIS__RETRY_SECONDS": "1",
    }
    made = prepare(env, tmp_path, fresh_database)
    try:
        yield made
    finally:
        stop_all(made.servers)


def stop_all(servers: list[ServerProcess]) -> None:
    codes = {server.url: server.stop() for server in servers}
    assert all(code in (0, -9) for code in codes.values()), codes


def receiver(cluster: Cluster, server: ServerProcess) -> str:
    body = {"name": "build", "type": "ci.build", "version": "1", "description": "", "schema": {}}
    answer = httpx.post(f"{server.url}/api/v1/receivers", json=body, headers=cluster.headers())
    assert answer.status_code in (200, 201), answer.text
    ident: str = answer.json()["data"]
    return ident


def count_events(database: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database)
        try:
            found: int = await conn.fetchval("SELECT count(*) FROM events")
            return found
        finally:
            await conn.close()

    return asyncio.run(count())


def record_committed(database: str, key: str) -> bool:
    async def find() -> bool:
        conn = await asyncpg.connect(database)
        try:
            row = await conn.fetchrow("SELECT 1 FROM idempotency_records WHERE key = $1", key)
            return row is not None
        finally:
            await conn.close()

    return asyncio.run(find())


# --- idempotency across processes ---------------------------------------------------------------


def test_the_same_key_round_robin_to_three_processes_stores_one_event(cluster: Cluster) -> None:
    servers = cluster.start(3)
    event = {**EVENT, "event_receiver_id": receiver(cluster, servers[0])}
    rounds = 10
    for n in range(rounds):
        key = f"round-robin-{n}"
        answers = [
            httpx.post(
                f"{servers[i % 3].url}/api/v1/events",
                json=event,
                headers=cluster.headers(**{"Idempotency-Key": key}),
            )
            for i in range(n, n + 6)
        ]
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.content for a in answers}) == 1
        assert [a.headers.get("idempotent-replayed") for a in answers] == [None] + ["true"] * 5
    # the same, all at once: the duplicates wait for the first one's commit
    for n in range(rounds):
        headers = cluster.headers(**{"Idempotency-Key": f"at-once-{n}"})
        together: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=_post, args=(f"{servers[i % 3].url}/api/v1/events", event, headers, together)
            )
            for i in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {a.status_code for a in together} == {201}, [a.text for a in together]
        assert len({a.content for a in together}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in together) == 5
    assert count_events(cluster.database) == 2 * rounds


def _post(
    url: str,
    body: dict[str, object],
    headers: dict[str, str],
    answers: list[httpx.Response],
    lost: list[BaseException] | None = None,
) -> None:
    try:
        answers.append(httpx.post(url, json=body, headers=headers, timeout=30))
    except httpx.TransportError as exc:
        if lost is None:
            raise
        lost.append(exc)


def test_a_crash_after_commit_replays_the_first_answer_elsewhere_or_after_a_restart(
    cluster: Cluster,
) -> None:
    """A: answers 5 s after its commit (the test hook); killed -9 in between. Rounds alternate:
    the retry goes to B (another process), or to A started again (a restart)."""
    [slow] = cluster.start(1, **{TEST_ANSWER_DELAY_VARIABLE: "5"})
    [other] = cluster.start(1)
    event = {**EVENT, "event_receiver_id": receiver(cluster, other)}
    rounds = 6
    for n in range(rounds):
        key = f"crash-{n}"
        headers = cluster.headers(**{"Idempotency-Key": key})
        lost: list[BaseException] = []
        answered: list[httpx.Response] = []
        thread = threading.Thread(
            target=_post, args=(f"{slow.url}/api/v1/events", event, headers, answered, lost)
        )
        thread.start()
        deadline = time.monotonic() + 20
        while not record_committed(cluster.database, key):
            assert time.monotonic() < deadline, slow.output()
            time.sleep(0.02)
        slow.kill()  # committed, not answered
        thread.join()
        assert (len(lost), answered) == (1, [])  # the client never got its answer
        if n % 2:
            slow.restart()
            slow.wait_ready(60)
            retry_on = slow
        else:
            retry_on = other
        retried = httpx.post(
            f"{retry_on.url}/api/v1/events", json=event, headers=headers, timeout=30
        )
        assert retried.status_code == 201, retried.text
        assert retried.headers["idempotent-replayed"] == "true"
        assert retried.headers["location"] == f"/api/v1/events/{retried.json()['data']}"
        stored = httpx.get(f"{other.url}{retried.headers['location']}", headers=cluster.headers())
        assert stored.status_code == 200
        assert count_events(cluster.database) == n + 1
        if slow.proc.poll() is not None:
            slow.restart()
            slow.wait_ready(60)


# --- rate limits across processes ---------------------------------------------------------------


def test_a_rate_limit_is_shared_by_three_processes_within_ten_percent(
    fresh_database: str, redis_db: str, tmp_path: pathlib.Path
) -> None:
    """10 requests a second (burst 5) for one credential, three processes, 10 s of a load
    well above it: what is admitted is the rate, not three times it. The request is cheap
    (a 404 right after the rate limit) and the rate low, so that the count measures
    admission, not the machine (a loaded 2-core box): the test checks that far more was
    offered than admitted."""
    rate, burst, seconds = 10.0, 5, 10.0
    env = {
        "WAYPOST__DATABASE__URL": fresh_database,
        "WAYPOST__DATABASE__POOL_SIZE": "4",
        "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY,
        "WAYPOST__REDIS__URL": redis_db,
        "WAYPOST__REDIS__PUBLISH_MESSAGES": "false",
        "WAYPOST__LIMITS__REQUESTS_PER_SECOND": str(rate),
        "WAYPOST__LIMITS__BURST": str(burst),
    }
    made = prepare(env, tmp_path, fresh_database)
    try:
        servers = made.start(3)
        outcome = asyncio.run(_hammer(made, servers, seconds))
    finally:
        stop_all(made.servers)
    admitted, refused, other_statuses, elapsed, offered, errors = outcome
    expected = burst + rate * elapsed
    print(  # the figures of the closing note (pytest -s / -rP)
        f"rate limit across 3 processes: {admitted} admitted of {offered} offered in "
        f"{elapsed:.2f} s; expected {expected:.1f} ({admitted / expected:.1%})"
    )
    assert not errors, errors[:5]
    assert offered >= 3 * expected, (offered, expected)  # the load was well above the limit
    assert 0.9 * expected <= admitted <= 1.1 * expected, (admitted, expected, elapsed)
    assert refused == offered - admitted
    # the second credential, at a pace under the limit, was never refused
    assert other_statuses == {404}, other_statuses


async def _hammer(
    cluster: Cluster, servers: list[ServerProcess], seconds: float
) -> tuple[int, int, set[int], float, int, list[str]]:
    admitted = refused = offered = 0
    other_statuses: set[int] = set()
    errors: list[str] = []
    path = "/api/v1/events/not-an-id"  # 404 right after authentication and the rate limit
    async with httpx.AsyncClient(timeout=10) as http:
        start = time.monotonic()
        end = start + seconds

        async def client(n: int) -> None:
            nonlocal admitted, refused, offered
            while time.monotonic() < end:
                server = servers[n % len(servers)]
                n += 1
                try:
                    answer = await http.get(f"{server.url}{path}", headers=cluster.headers())
                except httpx.TransportError as exc:
                    errors.append(repr(exc))
                    continue
                if time.monotonic() > end:
                    break  # answered after the window: not counted either way
                offered += 1
                if answer.status_code == 404:
                    admitted += 1
                elif answer.status_code == 429:
                    refused += 1
                else:
                    errors.append(f"{answer.status_code} {answer.text}")

        async def other() -> None:
            n = 0
            while time.monotonic() < end:
                answer = await http.get(
                    f"{servers[n % len(servers)].url}{path}",
                    headers=cluster.headers(cluster.other_key),
                )
                other_statuses.add(answer.status_code)
                n += 1
                await asyncio.sleep(0.25)  # 4 a second: well under its own 10

        await asyncio.gather(*(client(n) for n in range(8)), other())
        elapsed = min(time.monotonic(), end) - start
    return admitted, refused, other_statuses, elapsed, offered, errors


# --- a Redis outage under load ------------------------------------------------------------------


def test_redis_stopped_and_started_under_load(fresh_database: str, tmp_path: pathlib.Path) -> None:
    with running_redis() as redis:
        env = {
            "WAYPOST__DATABASE__URL": fresh_database,
            "WAYPOST__DATABASE__POOL_SIZE": "4",
            "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY,
            "WAYPOST__REDIS__URL": redis.url,
            "WAYPOST__REDIS__PUBLISH_MESSAGES": "false",
            "WAYPOST__REDIS__RETRY_SECONDS": "1",
        }
        made = prepare(env, tmp_path, fresh_database)
        try:
            servers = made.start(2)
            statuses: list[int] = []
            stop = threading.Event()
            load = threading.Thread(target=_load, args=(made, servers, statuses, stop))
            load.start()
            try:
                time.sleep(1)
                assert all(_gauge(s, "waypost_rate_limits_shared") == 1 for s in servers)
                redis.stop()
                time.sleep(3)
                during = [_gauge(s, "waypost_rate_limits_shared") for s in servers]
                ready = [httpx.get(f"{s.url}/healthz/ready") for s in servers]
                redis.start()
                deadline = time.monotonic() + 15
                while not all(_gauge(s, "waypost_rate_limits_shared") == 1 for s in servers):
                    assert time.monotonic() < deadline, [s.output() for s in servers]
                    time.sleep(0.2)
                time.sleep(1)
            finally:
                stop.set()
                load.join()
            outputs = [s.log.read_text() for s in servers]
        finally:
            stop_all(made.servers)
    assert statuses
    assert not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert during == [0, 0]  # the fallback, in the metrics
    assert [r.status_code for r in ready] == [200, 200]
    assert {r.json()["components"]["rate_limits"]["status"] for r in ready} == {"degraded"}
    for output in outputs:  # one line when it failed, one when it came back
        assert output.count("Redis failed") == 1, output[-3000:]
        assert output.count("rate limits are shared again") == 1, output[-3000:]


def _load(
    cluster: Cluster, servers: list[ServerProcess], statuses: list[int], stop: threading.Event
) -> None:
    with httpx.Client(timeout=10) as http:
        n = 0
        while not stop.is_set():
            answer = http.get(
                f"{servers[n % len(servers)].url}/api/v1/receivers", headers=cluster.headers()
            )
            statuses.append(answer.status_code)
            n += 1


def _gauge(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, text
    return float(found.group(1))


# --- a PostgreSQL outage under load -------------------------------------------------------------


def test_postgres_stopped_and_started_under_load(tmp_path: pathlib.Path) -> None:
    with running_postgres() as postgres:
        database = postgres.url()
        env = {
            "WAYPOST__DATABASE__URL": database,
            "WAYPOST__DATABASE__POOL_SIZE": "4",
            "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY,
        }
        made = prepare(env, tmp_path, database)
        try:
            [server] = made.start(1)
            pid = server.proc.pid
            event = {**EVENT, "event_receiver_id": receiver(made, server)}
            answers: list[tuple[float, int, str | None]] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=30) as http:
                    while not stop.is_set():
                        answer = http.post(
                            f"{server.url}/api/v1/events", json=event, headers=made.headers()
                        )
                        answers.append(
                            (
                                time.monotonic(),
                                answer.status_code,
                                answer.headers.get("retry-after"),
                            )
                        )
                        if answer.status_code != 201:
                            time.sleep(0.02)

            thread = threading.Thread(target=load)
            thread.start()
            try:
                time.sleep(1)
                stopping = time.monotonic()
                postgres.stop()
                stopped = time.monotonic()
                time.sleep(3)
                postgres.start()
                back = time.monotonic()
                time.sleep(4)
            finally:
                stop.set()
                thread.join()
            assert server.proc.poll() is None
            assert server.proc.pid == pid  # no restart
            output = server.output()
        finally:
            stop_all(made.servers)
    before = [s for t, s, _ in answers if t < stopping]
    down = [(s, r) for t, s, r in answers if stopped + 0.5 < t < back]
    after = [(t, s) for t, s, _ in answers if t > back]
    assert set(before) == {201}, before
    assert down
    assert {s for s, _ in down} == {503}, sorted({s for s, _ in down})
    assert all(r == "1" for _, r in down)
    assert not [s for _, s, _ in answers if s >= 500 and s != 503]
    first_201 = next(t for t, s in after if s == 201)
    assert first_201 - back <= 2.0, first_201 - back
    assert all(s == 201 for t, s in after if t > first_201 + 0.5)
    # one line for the outage with its cause, one when it ended; no traceback
    assert output.count("is unavailable:") == 1, output
    assert output.count("serves again after") == 1, output
    assert "Traceback" not in output


# --- serve --workers 2 ----------------------------------------------------------------------------


def test_two_workers_serve_print_the_key_once_and_stop_gracefully(
    fresh_database: str, tmp_path: pathlib.Path
) -> None:
    env = {
        "WAYPOST__DATABASE__URL": fresh_database,
        "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY,
    }
    server = ServerProcess(env, tmp_path / "workers.log", "--workers", "2", port=free_port())
    try:
        server.wait_ready(60)
        key = server.bootstrap_key()  # exactly one, though two processes serve
        children = _children(server.proc.pid)
        assert len(children) == 2, children
        made = httpx.post(
            f"{server.url}/api/v1/tenants",
            json={"slug": "acme", "name": "Acme"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert made.status_code == 201
        statuses = {
            httpx.get(
                f"{server.url}/api/v1/tenants", headers={"Authorization": f"Bearer {key}"}
            ).status_code
            for _ in range(20)
        }
        assert statuses == {200}
    finally:
        started = time.monotonic()
        code = server.stop()
    assert code == 0, server.output()
    assert time.monotonic() - started < 20
    assert len(BOOTSTRAP_KEY.findall(server.log.read_text())) == 1
    for child in children:
        assert not pathlib.Path(f"/proc/{child}").exists()


def _children(pid: int) -> list[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker)."""
    deadline = time.monotonic() + 30
    while True:
        found = [
            int(c)
            for task in pathlib.Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()
            if b"spawn_main" in pathlib.Path(f"/proc/{c}/cmdline").read_bytes()
        ]
        if len(found) >= 2 or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_killed_supervisors_workers_stop_by_themselves(
    fresh_database: str, tmp_path: pathlib.Path
) -> None:
    env = {"WAYPOST__DATABASE__URL": fresh_database, "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY}
    server = ServerProcess(env, tmp_path / "workers.log", "--workers", "2", port=free_port())
    try:
        server.wait_ready(60)
        children = _children(server.proc.pid)
        os.kill(server.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(pathlib.Path(f"/proc/{c}").exists() and _alive(c) for c in children):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
