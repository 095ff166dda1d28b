"""HTTP ingest benchmark: a real server process under load, against its references.

    python bench/http_load.py [--backends sqlite,postgres] [--seconds 10] [--connections 16]
                              [--processes 1,2]

For each backend, in one run:
1. The *maximum* rate: closed loop, `--connections` clients sending back to back.
2. *Open loop* at 70% of that maximum: requests are scheduled at a fixed arrival
   rate, whatever the server does, and each latency is measured from the moment
   the request was scheduled, so queueing counts (no coordinated omission).
Targets: `POST /api/v1/events` (without and with an `Idempotency-Key`, a new one per
request: what the durable record costs) and `POST /api/v1/events/batch` (100 events each).
References, same run, same concurrency (`--connections` workers):
- the bare Litestar app (bench/bare_app.py) answering a JSON POST, served the same way;
- "same rows by hand" (the targets' reference): the raw driver writing the rows Waypost
  writes for these events, with the tenant's head lock (see bench/ingest.py); one
  transaction per event for singles, one per 100 events for batches;
- "bare insert": the raw driver inserting each event's own row into a table with a
  primary key only.
On two or more CPUs the server gets one and this process (load generator and the
references) another, so that neither's scheduling is counted as the other's latency.

`--processes 1,2` adds a table: single events on PostgreSQL to `waypost serve --workers
N` for each N, in the same run, unpinned (the server processes share the CPUs with the
load generator, whose own CPU use is reported beside: on a 2-core box a second server
process competes with it). Load is bounded in count and time and goes to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import msgspec

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.system import UlidSource
from bench.ingest import (  # the same raw drivers and rows as the ingest benchmark
    HandEvent,
    HandPostgres,
    HandSqlite,
    RawPostgres,
    RawSqlite,
)
from core.domain.commands import RecordEvent
from tests.servers import running_postgres

BATCH = 100
SCHEMA = {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SERVER_CPUS: set[int] = set()  # filled by `pin_cpus`; empty: not pinned


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


@contextmanager
def serving(argv: list[str], env: dict[str, str], port: int, *, pin: bool = True) -> Iterator[str]:
    """A server process on loopback; SIGTERM at the end."""
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if pin and SERVER_CPUS:  # before it serves; threads it starts later inherit the mask
        os.sched_setaffinity(proc.pid, SERVER_CPUS)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/healthz/live", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


# --- a small HTTP/1.1 load generator on raw asyncio streams ------------------------------


def request_bytes(path: str, body: bytes, key: str, idempotency_key: str | None = None) -> bytes:
    extra = "" if idempotency_key is None else f"Idempotency-Key: {idempotency_key}\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


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


async def closed_loop(
    port: int, make: Callable[[], bytes], connections: int, seconds: float
) -> float:
    """Requests per second with `connections` clients sending back to back."""
    done = 0
    failed = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            if await exchange(reader, writer, make()) == 201:
                done += 1
            else:
                failed += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    if failed:
        print(f"#   {failed} non-201 answers in the closed loop", file=sys.stderr)
    return done / (time.perf_counter() - start)


async def open_loop(
    port: int, make: Callable[[], bytes], rate: float, seconds: float, connections: int
) -> tuple[float, float, float, int]:
    """(achieved rate, p50 ms, p99 ms, errors) at a fixed arrival rate."""
    total = int(rate * seconds)
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (scheduled := await queue.get()) is not None:
            status = await exchange(reader, writer, make())
            latencies.append((time.perf_counter() - scheduled) * 1000)
            if status != 201:
                errors += 1
        writer.close()

    workers = [asyncio.create_task(client()) for _ in range(connections)]
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return (
        len(latencies) / elapsed,
        statistics.median(latencies),
        latencies[max(0, int(len(latencies) * 0.99) - 1)],
        errors,
    )


# --- the raw driver at the same concurrency -----------------------------------------------


async def reference_rate(
    ref: Reference, item: Callable[[], Any], batch: int, connections: int, seconds: float
) -> float:
    """Events per second of `connections` workers writing back to back through `ref`."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            if batch == 1:
                await ref.single(item())
            else:
                await ref.batch([item() for _ in range(batch)])
            done += batch

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.perf_counter() - start)


# --- the run -------------------------------------------------------------------------------


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


def waypost(env: dict[str, str], *args: str) -> str:
    """Run the `waypost` CLI on the benchmark's database; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def credential(env: dict[str, str]) -> str:
    """A tenant `bench` and an admin API key for it, made the way an operator would."""
    waypost(env, "admin", "create-tenant", "bench")
    return waypost(
        env, "admin", "create-api-key", "--tenant", "bench", "--role", "admin", "--name", "bench"
    )


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


def makers(receiver: str, key: str) -> dict[str, Callable[[], bytes]]:
    counter = iter(range(10**9))
    encode = msgspec.json.encode
    run = UlidSource().new_id()  # keys never seen before, in any run

    def keyed() -> bytes:
        n = next(counter)
        return request_bytes("/api/v1/events", encode(event(receiver, n)), key, f"{run}-{n}")

    return {
        "single": lambda: request_bytes(
            "/api/v1/events", encode(event(receiver, next(counter))), key
        ),
        "single+key": keyed,
        "batch": lambda: request_bytes(
            "/api/v1/events/batch",
            encode({"events": [event(receiver, next(counter)) for _ in range(BATCH)]}),
            key,
        ),
    }


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


async def measure(
    port: int, make: Callable[[], bytes], args: argparse.Namespace
) -> dict[str, float]:
    with no_collector_pauses():
        maximum = await closed_loop(port, make, args.connections, args.seconds)
    with no_collector_pauses():
        rate, p50, p99, errors = await open_loop(
            port, make, 0.7 * maximum, args.seconds, args.connections * 4
        )
    return {"max": maximum, "rate70": rate, "p50": p50, "p99": p99, "errors": errors}


async def references(refs: References, kind: str, args: argparse.Namespace) -> tuple[float, float]:
    """(bare insert ev/s, same rows by hand ev/s) for `kind`, at the benchmark's concurrency."""
    ids, counter = UlidSource(), iter(range(10**9))
    tenant, receiver = "01JBENCHTENANT000000000000", "01JBENCHRECEIVER0000000000"
    per = BATCH if kind == "batch" else 1

    def command() -> RecordEvent:
        return msgspec.convert(event(receiver, next(counter)), RecordEvent)

    def bare_row() -> tuple[Any, ...]:
        cmd = command()
        return (ids.new_id(), tenant, cmd.name, cmd.version, cmd.release, cmd.platform_id,
                cmd.package, cmd.description, msgspec.json.encode(cmd.payload).decode(), True,
                receiver, time.time())  # fmt: skip

    bare_at, hand_at = refs
    async with bare_at() as bare:
        bare_eps = await reference_rate(bare, bare_row, per, args.connections, args.seconds)
    async with hand_at(tenant, receiver) as hand:
        hand_eps = await reference_rate(
            hand, lambda: HandEvent(ids, tenant, command()), per, args.connections, args.seconds
        )
    return bare_eps, hand_eps


async def run_backend(name: str, workdir: pathlib.Path, args: argparse.Namespace) -> list[str]:
    rows = []
    with backend_for(name, workdir, args.connections) as (db_url, refs):
        port = free_port()
        argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)]
        env = {
            "WAYPOST__DATABASE__URL": db_url,
            "WAYPOST__SECRETS__MASTER_KEY": waypost({}, "secrets", "new-master-key"),
            # One credential sends everything here, far above the default per-credential
            # rate: raised, so that cheap 429s do not stand in for ingest. (The limiter
            # still runs: its cost is measured.)
            "WAYPOST__LIMITS__REQUESTS_PER_SECOND": "1000000",
            "WAYPOST__LIMITS__BURST": "1000000",
        }
        waypost(env, "migrate")
        key = credential(env)
        with serving(argv, env, port) as url:
            receiver = register_receiver(url, key)
            measured: dict[int, tuple[float, float]] = {}
            made = makers(receiver, key)
            cost = await keyed_cost(port, made, args)
            for kind, make in made.items():
                ours = await measure(port, make, args)
                per = BATCH if kind == "batch" else 1
                if per not in measured:  # singles with and without a key: the same rows
                    measured[per] = await references(refs, kind, args)
                rows.append((name, kind, ours, *measured[per], per))
    return format_rows(rows, cost)


async def run_bare(args: argparse.Namespace) -> list[str]:
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
    lines = []
    with serving(argv, {"PYTHONPATH": str(ROOT)}, port):
        for kind, make in makers("01JBENCH000000000000000000", "unused").items():
            if kind == "single+key":
                continue
            result = await measure(port, make, args)
            per = BATCH if kind == "batch" else 1
            lines.append(
                f"| bare Litestar | {kind} | {result['max']:,.0f} req/s "
                f"({result['max'] * per:,.0f} ev/s) "
                f"| {result['p50']:.1f} / {result['p99']:.1f} | - | - | - | - |"
            )
    return lines


async def keyed_cost(
    port: int, make: dict[str, Callable[[], bytes]], args: argparse.Namespace, rounds: int = 6
) -> float:
    """What a new Idempotency-Key per request costs single events: closed loops with and
    without, alternated (ABBA...) in short rounds on the same server, so that a machine
    whose load drifts (other work, a checkpoint) weighs on both alike. 1 - the median of
    each round's keyed/plain throughput."""
    ratios = []
    for n in range(rounds):
        order = ("single", "single+key") if n % 2 == 0 else ("single+key", "single")
        got = {}
        for kind in order:
            with no_collector_pauses():
                got[kind] = await closed_loop(
                    port, make[kind], args.connections, max(1.0, args.seconds / 4)
                )
        ratios.append(got["single+key"] / got["single"])
    return 1 - statistics.median(ratios)


def format_rows(
    rows: list[tuple[str, str, dict[str, float], float, float, int]], cost: float | None = None
) -> list[str]:
    lines = []
    for name, kind, ours, bare_eps, hand_eps, per in rows:
        eps = ours["max"] * per
        target = 0.35 if kind == "single" else 0.40
        lines.append(
            f"| Waypost {name} | {kind} | {ours['max']:,.0f} req/s ({eps:,.0f} ev/s) "
            f"| {ours['p50']:.1f} / {ours['p99']:.1f} | {hand_eps:,.0f} ev/s "
            f"| **{eps / hand_eps:.0%}** (>= {target:.0%}) | {bare_eps:,.0f} ev/s "
            f"| {eps / bare_eps:.0%} |"
            + (f" {int(ours['errors'])} errors" if ours["errors"] else "")
        )
    if cost is not None:
        lines.append(
            f"| Waypost {rows[0][0]} | Idempotency-Key cost | **{cost:.0%}** of single-event "
            "throughput (target <= 15%; median of 6 alternated rounds) | | | | | |"
        )
    return lines


Reference = RawSqlite | RawPostgres | HandSqlite | HandPostgres
References = tuple[
    Callable[[], RawSqlite | RawPostgres], Callable[[str, str], HandSqlite | HandPostgres]
]


@contextmanager
def backend_for(
    name: str, workdir: pathlib.Path, connections: int
) -> Iterator[tuple[str, References]]:
    """The server's database URL, and makers of the two references on databases of their own."""
    counter = iter(range(1000))
    if name == "sqlite":
        yield (
            f"sqlite:///{workdir / 'waypost.db'}",
            (
                lambda: RawSqlite(str(workdir / f"bare{next(counter)}.db")),
                lambda tenant, receiver: HandSqlite(
                    str(workdir / f"hand{next(counter)}.db"), tenant, receiver
                ),
            ),
        )
        return
    with running_postgres() as server:
        yield (
            server.create_database("bench"),
            (
                lambda: RawPostgres(server.create_database("bare"), connections),
                lambda tenant, receiver: HandPostgres(
                    server.create_database("hand"), tenant, receiver, connections
                ),
            ),
        )


async def run_processes(counts: list[int], args: argparse.Namespace) -> list[str]:
    """Single events on PostgreSQL to `serve --workers N`, for each N, same database kind."""
    lines = [
        "| server processes | request | max throughput | load generator CPU |",
        "|---:|---|---:|---:|",
    ]
    with running_postgres() as server:
        for count in counts:
            db_url = server.create_database(f"procs{count}")
            port = free_port()
            argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port),
                    "--workers", str(count)]  # fmt: skip
            env = {
                "WAYPOST__DATABASE__URL": db_url,
                "WAYPOST__SECRETS__MASTER_KEY": waypost({}, "secrets", "new-master-key"),
                "WAYPOST__LIMITS__REQUESTS_PER_SECOND": "1000000",
                "WAYPOST__LIMITS__BURST": "1000000",
                "WAYPOST__DATABASE__POOL_SIZE": str(max(4, args.connections // count)),
            }
            waypost(env, "migrate")
            key = credential(env)
            with serving(argv, env, port, pin=False) as url:
                await asyncio.sleep(2 * count)  # every worker up, not only the first
                make = makers(register_receiver(url, key), key)["single"]
                with no_collector_pauses():
                    cpu, wall = time.process_time(), time.perf_counter()
                    maximum = await closed_loop(port, make, args.connections, args.seconds)
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            lines.append(
                f"| {count} | single | {maximum:,.0f} req/s | {cpu / wall:.0%} of one CPU |"
            )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--processes",
        default="",
        help="e.g. 1,2: also single events on PostgreSQL to that many server processes",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",") if n.strip()]
    if counts:
        print("# server processes (unpinned) ...", file=sys.stderr, flush=True)
        processes = await run_processes(counts, args)
    print(f"# {pin_cpus()}", file=sys.stderr)
    lines = [
        "| server | request | max throughput | p50 / p99 ms at 70% of max "
        "| same rows by hand | ratio (target) | bare insert | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += await run_bare(args)
    with tempfile.TemporaryDirectory(prefix="waypost-http-bench-") as tmp:
        for name in args.backends.split(","):
            print(f"# {name} ...", file=sys.stderr, flush=True)
            lines += await run_backend(name, pathlib.Path(tmp), args)
    print("\n".join(lines))
    if counts:
        print()
        print("\n".join(processes))


if __name__ == "__main__":
    asyncio.run(main())
