"""HTTP ingest benchmark: a real server process under load, against its references.

    python bench/http_load.py [--backends sqlite,postgres] [--seconds 10] [--connections 16]

For each backend, in one run:
1. The *maximum* rate: closed loop, `--connections` clients sending back to back.
2. *Open loop* at 70% of that maximum: requests are scheduled at a fixed arrival
   rate, whatever the server does, and each latency is measured from the moment
   the request was scheduled, so queueing counts (no coordinated omission).
Targets: `POST /api/v1/events` and `POST /api/v1/events/batch` (100 events each).
References, same run, same concurrency: the bare Litestar app (bench/bare_app.py)
served the same way, and the raw driver inserting the same rows (one row per
transaction for singles, executemany per batch). Load is bounded in count and time
and goes to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
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
from bench.ingest import RawPostgres, RawSqlite, raw_row  # the same raw drivers and rows
from tests.servers import running_postgres

BATCH = 100
SCHEMA = {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(argv: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    """A server process on loopback; SIGTERM at the end."""
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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


def request_bytes(path: str, body: bytes, key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
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


async def raw_rate(
    raw: RawSqlite | RawPostgres, batch: int, connections: int, seconds: float
) -> float:
    ids = UlidSource()
    done = 0
    stop = time.perf_counter() + seconds
    lock = asyncio.Lock()  # one connection: the raw driver's own serialization

    async def worker() -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            rows = [raw_row(ids, "tenant", "receiver", i + k) for k in range(batch)]
            async with lock:
                if batch == 1:
                    await raw.single(rows[0])
                else:
                    await raw.batch(rows)
            done += batch
            i += batch

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
    return {
        "single": lambda: request_bytes(
            "/api/v1/events", encode(event(receiver, next(counter))), key
        ),
        "batch": lambda: request_bytes(
            "/api/v1/events/batch",
            encode({"events": [event(receiver, next(counter)) for _ in range(BATCH)]}),
            key,
        ),
    }


async def measure(
    port: int, make: Callable[[], bytes], args: argparse.Namespace
) -> dict[str, float]:
    maximum = await closed_loop(port, make, args.connections, args.seconds)
    rate, p50, p99, errors = await open_loop(
        port, make, 0.7 * maximum, args.seconds, args.connections * 4
    )
    return {"max": maximum, "rate70": rate, "p50": p50, "p99": p99, "errors": errors}


async def run_backend(name: str, workdir: pathlib.Path, args: argparse.Namespace) -> list[str]:
    rows = []
    with backend_for(name, workdir) as (db_url, raw_factory):
        port = free_port()
        argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)]
        env = {
            "WAYPOST__DATABASE__URL": db_url,
            "WAYPOST__SECRETS__MASTER_KEY": waypost({}, "secrets", "new-master-key"),
        }
        waypost(env, "migrate")
        key = credential(env)
        with serving(argv, env, port) as url:
            receiver = register_receiver(url, key)
            for kind, make in makers(receiver, key).items():
                ours = await measure(port, make, args)
                per = BATCH if kind == "batch" else 1
                async with raw_factory() as raw:
                    raw_eps = await raw_rate(raw, per, args.connections, args.seconds)
                rows.append((name, kind, ours, raw_eps, per))
    return format_rows(rows)


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
            result = await measure(port, make, args)
            per = BATCH if kind == "batch" else 1
            lines.append(
                f"| bare Litestar | {kind} | {result['max']:,.0f} req/s "
                f"({result['max'] * per:,.0f} ev/s) "
                f"| {result['p50']:.1f} / {result['p99']:.1f} | - | - |"
            )
    return lines


def format_rows(rows: list[tuple[str, str, dict[str, float], float, int]]) -> list[str]:
    lines = []
    for name, kind, ours, raw_eps, per in rows:
        eps = ours["max"] * per
        lines.append(
            f"| Waypost {name} | {kind} | {ours['max']:,.0f} req/s ({eps:,.0f} ev/s) "
            f"| {ours['p50']:.1f} / {ours['p99']:.1f} | {raw_eps:,.0f} ev/s | {eps / raw_eps:.0%} |"
            + (f" {int(ours['errors'])} errors" if ours["errors"] else "")
        )
    return lines


@contextmanager
def backend_for(name: str, workdir: pathlib.Path) -> Iterator[tuple[str, Callable[[], Any]]]:
    if name == "sqlite":
        counter = iter(range(1000))
        yield (
            f"sqlite:///{workdir / 'waypost.db'}",
            lambda: RawSqlite(str(workdir / f"raw{next(counter)}.db")),
        )
        return
    with running_postgres() as server:
        url = server.create_database("bench")
        yield url, lambda: RawPostgres(server.create_database("raw"))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    lines = [
        "| server | request | max throughput | p50 / p99 ms at 70% of max | raw driver | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += await run_bare(args)
    with tempfile.TemporaryDirectory(prefix="waypost-http-bench-") as tmp:
        for name in args.backends.split(","):
            print(f"# {name} ...", file=sys.stderr, flush=True)
            lines += await run_backend(name, pathlib.Path(tmp), args)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
