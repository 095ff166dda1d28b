"""GraphQL read latency against the REST list of the same page, on a real server process.

    python bench/graphql_reads.py [--backends sqlite,postgres] [--requests 400] [--connections 1]

One server, one tenant, 1,000 events over 20 receivers. Targets, each a page of the
100 newest events with all their fields, in the same run, interleaved in rounds (so
that a machine's slow moment costs every target alike):

- `rest`: `GET /api/v1/events?limit=100` (the reference);
- `graphql`: `events_page(limit: 100) { items { ...every field } next_cursor }`;
- `graphql+receivers`: the same with each event's `event_receiver` (batch loaded);
- `epr-search`: EPR's `events(event: {name: ...})` for the same 100 events, at
  `/epr/api/v1/graphql/query`.

And in this process, without HTTP or storage: graphql-core executing the `graphql`
document over 100 events already in memory (what the library costs per page).

Latency is per request, closed loop, `--connections` clients back to back (1: the
latency of one caller, nothing queued). On two or more CPUs the server gets one and
this process another. Loopback only; bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import msgspec

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphql import ExecutionResult, build_schema, execute, parse

from bench.harness import (  # the same server harness and HTTP/1.1 client as the load test
    credential,
    event,
    exchange,
    free_port,
    no_collector_pauses,
    pin_cpus,
    serving,
    waypost,
)
from bench.http_load import backend_for
from core.domain.model import Event
from entrypoints.http.gql import scalars
from entrypoints.http.gql.schema import SDL

EVENTS = 1000
RECEIVERS = 20
PAGE = 100
FIELDS = (
    "id name version release platform_id package description payload success "
    "event_receiver_id created_at"
)
DOCUMENTS = {
    "graphql": f"{{ events_page(limit: {PAGE}) {{ items {{ {FIELDS} }} next_cursor }} }}",
    "graphql+receivers": (
        f"{{ events_page(limit: {PAGE}) {{ items {{ {FIELDS} event_receiver {{ id name type "
        "version description schema fingerprint created_at } } next_cursor } }"
    ),
    # EPR's search for one artifact's events: the page's 100 (release r0..r99 share name 'page')
    "epr-search": f'{{ events(event: {{name: "page"}}) {{ {FIELDS} }} }}',
}


def raw_get(path: str, key: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n".encode()


def raw_post(path: str, body: bytes, key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def fill(url: str, key: str) -> None:
    """1,000 events over 20 receivers; the newest 100 are named `page` (EPR's search)."""
    auth = {"Authorization": f"Bearer {key}"}
    receivers = []
    for n in range(RECEIVERS):
        made = httpx.post(
            f"{url}/api/v1/receivers",
            headers=auth,
            json={
                "name": f"r{n}",
                "type": "bench.build",
                "version": "1",
                "description": "a receiver",
                "schema": {"type": "object", "properties": {"build": {"type": "integer"}}},
            },
        )
        made.raise_for_status()
        receivers.append(made.json()["data"])
    for start in range(0, EVENTS, 100):
        batch = []
        for i in range(start, start + 100):
            body = event(receivers[i % RECEIVERS], i)
            body["name"] = "page" if i >= EVENTS - PAGE else "old"
            batch.append(body)
        httpx.post(
            f"{url}/api/v1/events/batch", headers=auth, json={"events": batch}, timeout=60
        ).raise_for_status()


def requests_for(key: str) -> dict[str, tuple[bytes, Callable[[bytes], int]]]:
    """Each target's request bytes, and how to count the events in its answer."""

    def rest_count(body: bytes) -> int:
        return len(msgspec.json.decode(body)["data"])

    def gql_count(body: bytes) -> int:
        data = msgspec.json.decode(body)
        assert "errors" not in data, data["errors"]
        found = next(iter(data["data"].values()))
        return len(found["items"] if isinstance(found, dict) else found)

    targets: dict[str, tuple[bytes, Callable[[bytes], int]]] = {
        "rest": (raw_get(f"/api/v1/events?limit={PAGE}", key), rest_count)
    }
    for name, document in DOCUMENTS.items():
        path = "/epr/api/v1/graphql/query" if name == "epr-search" else "/api/v1/graphql"
        body = msgspec.json.encode({"query": document})
        targets[name] = (raw_post(path, body, key), gql_count)
    return targets


async def read_answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def check(port: int, targets: dict[str, tuple[bytes, Callable[[bytes], int]]]) -> None:
    """Each target answers 200 with the 100 events, before anything is timed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for name, (raw, count) in targets.items():
        status, body = await read_answer(reader, writer, raw)
        assert status == 200, (name, status, body[:300])
        assert count(body) == PAGE, (name, count(body))
    writer.close()


async def rounds(port: int, raw: bytes, connections: int, requests: int, into: list[float]) -> None:
    """`requests` requests over `connections` clients back to back; latencies in ms."""
    per = max(1, requests // connections)

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per):
            started = time.perf_counter()
            status = await exchange(reader, writer, raw)
            into.append((time.perf_counter() - started) * 1000)
            assert status == 200, status
        writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))


def in_process(requests: int) -> list[float]:
    """graphql-core executing the `graphql` document over 100 events in memory."""
    schema = build_schema(SDL)  # the default resolvers read the page handed in as the root
    scalars.install(schema)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        Event(id=f"01JBENCH{i:018d}", tenant_id="t", created_at=now, **event("r", i))
        for i in range(PAGE)
    ]
    document = parse(DOCUMENTS["graphql"])
    page = {"items": events, "next_cursor": None}
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        result = execute(schema, document, root_value={"events_page": page})
        assert isinstance(result, ExecutionResult)
        assert not result.errors, result.errors
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, int(len(ordered) * q) - 1)]


async def run_backend(name: str, workdir: pathlib.Path, args: argparse.Namespace) -> list[str]:
    with backend_for(name, workdir, args.connections) as (database, _):
        db_url = database()
        port = free_port()
        env = {
            "WAYPOST__DATABASE__URL": db_url,
            "WAYPOST__SECRETS__MASTER_KEY": waypost({}, "secrets", "new-master-key"),
            "WAYPOST__LIMITS__REQUESTS_PER_SECOND": "1000000",
            "WAYPOST__LIMITS__BURST": "1000000",
        }
        waypost(env, "migrate")
        key = credential(env)
        argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)]
        with serving(argv, env, port) as (url, _):
            fill(url, key)
            targets = requests_for(key)
            await check(port, targets)
            for raw, _ in targets.values():  # warm up: caches, the document cache
                await rounds(port, raw, args.connections, 20, [])
            measured: dict[str, list[float]] = {name: [] for name in targets}
            step = max(args.connections, args.requests // 10)
            with no_collector_pauses():
                for _ in range(max(1, args.requests // step)):
                    for target, (raw, _) in targets.items():
                        await rounds(port, raw, args.connections, step, measured[target])
    rest = statistics.median(measured["rest"])
    lines = []
    for target, latencies in measured.items():
        p50 = statistics.median(latencies)
        lines.append(
            f"| {name} | {target} | {p50:.1f} | {p(latencies, 0.99):.1f} "
            f"| {p50 / rest:.2f}x | {len(latencies)} |"
        )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--connections", type=int, default=1)
    args = parser.parse_args()
    print(f"# {pin_cpus()}", file=sys.stderr)
    lines = [
        f"| backend | page of {PAGE} events | p50 ms | p99 ms | p50 vs REST | requests |",
        "|---|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="waypost-graphql-bench-") as tmp:
        for name in args.backends.split(","):
            print(f"# {name} ...", file=sys.stderr, flush=True)
            lines += await run_backend(name, pathlib.Path(tmp), args)
    local = in_process(args.requests)
    lines.append(
        f"| (in process) | graphql-core alone, same document | {statistics.median(local):.1f} "
        f"| {p(local, 0.99):.1f} | | {len(local)} |"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
