"""What the HTTP benchmarks share: real server processes on loopback, a small HTTP/1.1 load
generator on raw asyncio streams, and what a server process uses (CPU, memory, files).

Everything here goes to 127.0.0.1 only, and every loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import msgspec

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCHEMA = {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}
SERVER_CPUS: set[int] = set()  # filled by `pin_cpus`; empty: not pinned
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin_cpus() -> str:
    """Give the server processes and this load generator a CPU each (on 2+ CPUs).

    Sharing CPUs, the load generator's own scheduling delays would be counted as
    server latency. The references (raw driver writes) run in this process, on its CPU.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "one CPU: server and load generator share it"
    SERVER_CPUS.add(cpus[0])
    os.sched_setaffinity(0, {cpus[1]})
    return f"server on CPU {cpus[0]}, load generator and references on CPU {cpus[1]}"


class Process:
    """What a server process uses, read from /proc (Linux): CPU seconds, RSS, open files."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process (all its threads) so far."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@contextmanager
def serving(
    argv: list[str],
    env: dict[str, str],
    port: int,
    *,
    cwd: pathlib.Path = ROOT,
    pin: bool = True,
) -> Iterator[tuple[str, Process]]:
    """A server process on loopback, started in `cwd` (on the server's CPU unless not
    `pin`); SIGTERM at the end."""
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "PYTHONPATH": str(cwd), **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if pin and SERVER_CPUS:  # before it serves; threads it starts later inherit the mask
        os.sched_setaffinity(proc.pid, SERVER_CPUS)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz/live", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server {argv} did not start") from None
                time.sleep(0.05)
        yield url, Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def waypost(env: dict[str, str], *args: str, tree: pathlib.Path = ROOT) -> str:
    """Run the `waypost` CLI of the checkout `tree` on the benchmark's database; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env={**os.environ, "PYTHONPATH": str(tree), **env},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def credential(env: dict[str, str], tree: pathlib.Path = ROOT) -> str:
    """A tenant `bench` and an admin API key for it, made the way an operator would."""
    waypost(env, "admin", "create-tenant", "bench", tree=tree)
    return waypost(
        env,
        "admin",
        "create-api-key",
        "--tenant",
        "bench",
        "--role",
        "admin",
        "--name",
        "bench",
        tree=tree,
    )


def server_env(db_url: str, master_key: str) -> dict[str, str]:
    return {
        "WAYPOST__DATABASE__URL": db_url,
        "WAYPOST__SECRETS__MASTER_KEY": master_key,
        # One credential sends everything here, far above the default per-credential
        # rate: raised, so that cheap 429s do not stand in for ingest. (The limiter
        # still runs: its cost is measured.)
        "WAYPOST__LIMITS__REQUESTS_PER_SECOND": "1000000",
        "WAYPOST__LIMITS__BURST": "1000000",
    }


@contextmanager
def waypost_server(
    db_url: str, *, tree: pathlib.Path = ROOT, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[int, Process, str, str]]:
    """A migrated `waypost serve` of checkout `tree` on `db_url`: (port, process, API key,
    receiver id)."""
    env = server_env(db_url, waypost({}, "secrets", "new-master-key", tree=tree))
    env.update(extra_env or {})
    waypost(env, "migrate", tree=tree)
    key = credential(env, tree)
    port = free_port()
    argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)]
    with serving(argv, env, port, cwd=tree) as (url, proc):
        yield port, proc, key, register_receiver(url, key)


@contextmanager
def bare_server() -> Iterator[tuple[int, Process]]:
    """The bare Litestar app (bench/bare_app.py), served the way Waypost is."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_app:app",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with serving(argv, {}, port) as (_, proc):
        yield port, proc


def register_receiver(url: str, key: str) -> str:
    answer = httpx.post(
        url + "/api/v1/receivers",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "name": "build",
            "type": "bench.build",
            "version": "1",
            "description": "",
            "schema": SCHEMA,
        },
    )
    answer.raise_for_status()
    receiver: str = answer.json()["data"]
    return receiver


# --- requests ------------------------------------------------------------------------------


def event(receiver: str, i: int) -> dict[str, Any]:
    return {
        "name": "app",
        "version": f"1.{i % 50}",
        "release": str(i),
        "platform_id": "x86_64",
        "package": "rpm",
        "description": "",
        "payload": {"build": i},
        "success": True,
        "event_receiver_id": receiver,
    }


def request_bytes(path: str, body: bytes, key: str, idempotency_key: str | None = None) -> bytes:
    extra = "" if idempotency_key is None else f"Idempotency-Key: {idempotency_key}\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def maker(receiver: str, key: str, per: int, *, keyed: bool = False) -> Callable[[], bytes]:
    """Requests recording one event (`per` 1) or a batch of `per` events; `keyed`: single
    events each with an Idempotency-Key never seen before (what the durable record costs)."""
    counter = iter(range(10**9))
    encode = msgspec.json.encode
    if keyed:
        run = uuid.uuid4().hex  # keys never seen before, in any run

        def with_key() -> bytes:
            n = next(counter)
            body = encode(event(receiver, n))
            return request_bytes("/api/v1/events", body, key, f"{run}-{n}")

        return with_key
    if per == 1:
        return lambda: request_bytes("/api/v1/events", encode(event(receiver, next(counter))), key)
    return lambda: request_bytes(
        "/api/v1/events/batch",
        encode({"events": [event(receiver, next(counter)) for _ in range(per)]}),
        key,
    )


# --- the load generator --------------------------------------------------------------------


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


class Closed(msgspec.Struct, frozen=True):
    """A closed loop's outcome: requests per second, latencies (ms), failures (and their
    statuses), and the server CPU time each request took (µs; None when not measured)."""

    rate: float
    p50: float
    p99: float
    failed: int
    cpu_us: float | None
    statuses: dict[int, int] = msgspec.field(default_factory=dict)


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, max(0, int(len(sorted_ms) * q) - 1))]


def soak_flatness(
    samples: Sequence[dict[str, float]], start: float, end: float, limit: float
) -> dict[str, dict[str, float | bool]]:
    """Whether a soak stayed flat. `samples` are those of its steady period [`start`,
    `end`], each taken at `at` seconds: the server's RSS and open files then, and the
    p99 of the requests due in the window it closes. For each of the three, the median
    of the samples in the last third of the period is compared with that of the first:
    `drift` is how far it moved, as a share of the first, and `flat` says whether that
    is within `limit` either way. Memory that leaks or a tail that grows with the data
    shows as drift; a burst in one window does not move a median.

    `band` is reported beside it: the farthest sample from the median of all of them, as
    a share of that median. A window's p99 is one of its few dozen slowest requests (the
    60th-slowest of 6,000 at 600/s), and moves from one window to the next by far more
    than 10% with nothing growing (the bare framework's does too)."""
    third = (end - start) / 3
    found: dict[str, dict[str, float | bool]] = {}
    for key in ("rss", "open_files", "p99"):
        points = [(s["at"], s[key]) for s in samples if key in s and start < s["at"] <= end]
        first = [value for at, value in points if at <= start + third]
        last = [value for at, value in points if at > end - third]
        if not first or not last:
            continue
        before, after = statistics.median(first), statistics.median(last)
        middle = statistics.median(value for _, value in points)
        drift = (after - before) / before if before else math.nan
        found[key] = {
            "first": before,
            "last": after,
            "drift": drift,
            "band": max(abs(v - middle) for _, v in points) / middle if middle else math.nan,
            "flat": abs(drift) <= limit,
        }
    return found


async def closed_loop(
    port: int,
    make: Callable[[], bytes],
    connections: int,
    seconds: float,
    server: Process | None = None,
) -> Closed:
    """`connections` clients sending back to back for `seconds`."""
    done = failed = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (start := time.perf_counter()) < stop:
            status = await exchange(reader, writer, make())
            latencies.append((time.perf_counter() - start) * 1000)
            if status in (200, 201):
                done += 1
            else:
                failed += 1
                statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    cpu = server.cpu_seconds() if server is not None else 0.0
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    cpu_us = None
    if server is not None and done + failed:
        cpu_us = (server.cpu_seconds() - cpu) / (done + failed) * 1e6
    latencies.sort()
    return Closed(
        done / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        failed,
        cpu_us,
        statuses,
    )


class Open(msgspec.Struct, frozen=True):
    """An open loop's outcome: the rate achieved, latencies from the scheduled time (ms), and
    the answers that were not 2xx, by status (0: no answer at all)."""

    rate: float
    p50: float
    p99: float
    statuses: dict[int, int]
    latencies: list[tuple[float, float, int]]  # (scheduled s since start, latency ms, status)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values())


TIMED_OUT = -1
"""The status recorded for a request that got no answer within the open loop's timeout."""
IDLE_SECONDS = 4.0
"""A connection idle this long is replaced before its next request: uvicorn closes idle
keep-alive connections after 5 s, and a request sent as it does so gets no answer (an
error of the load generator's, not the server's)."""


async def open_loop(
    port: int,
    make: Callable[[], bytes],
    rate: float | Callable[[float], float],
    seconds: float,
    connections: int,
    *,
    answer_within: float = 30.0,
) -> Open:
    """Requests at a fixed arrival rate (or a rate that is a function of the time since the
    start), whatever the server does; each latency counts from the moment its request was
    due, so queueing counts (no coordinated omission). At most `connections` are in
    flight; the rest wait their turn, their waiting counted. A request unanswered after
    `answer_within` seconds counts as `TIMED_OUT` (its connection is replaced); one whose
    connection broke as 0."""
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    samples: list[tuple[float, float, int]] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        used = time.perf_counter()
        while (scheduled := await queue.get()) is not None:
            if time.perf_counter() - used > IDLE_SECONDS:  # the server may be closing it
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                status = await asyncio.wait_for(exchange(reader, writer, make()), answer_within)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
                status = TIMED_OUT if isinstance(exc, TimeoutError) else 0
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            used = time.perf_counter()
            samples.append((scheduled - start, (used - scheduled) * 1000, status))
            if not 200 <= status < 300:
                statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    workers = [asyncio.create_task(client()) for _ in range(connections)]
    at = 0.0
    while at < seconds:
        due = start + at
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)
        current = rate(at) if callable(rate) else rate
        at += 1 / current
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    latencies = sorted(latency for _, latency, _ in samples)
    return Open(
        len(samples) / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        statuses,
        samples,
    )


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """The load generator's own full collections (30-50 ms, seen) would be counted as the
    server's latency: the collector is off while a loop runs, and catches up afterwards."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
