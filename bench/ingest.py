"""Ingest benchmark: events through the use cases against the raw driver, same rows, same run.

    python bench/ingest.py [--backends sqlite,postgres] [--singles 2000] [--batches 20]
                           [--large 1000000]

For each backend it measures, in one process and one run:
- single-event transactions: `Events.record` one at a time, against the raw driver
  inserting the same row in its own transaction;
- 1000-event batches: `Events.record_batch`, against the raw driver's executemany of
  the same 1000 rows in one transaction;
- the latency of one append and of one page of `GET events` (the use case's list)
  with 10k and with `--large` events stored.
The raw driver writes only the event row; Waypost also writes the log entry, the
latest-per-artifact row, the checkpoint and the log head. That is the point of the
comparison: what the registry costs over a bare insert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiosqlite
import asyncpg
import msgspec

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from adapters.memory.cache import ReceiverLru
from adapters.sql.migrations import migrate
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, UlidSource
from core.domain.commands import CreateTenant, RecordEvent, RegisterReceiver
from core.ports import EventFilter, PageRequest
from core.usecases import Actor, Deps, Services
from tests.servers import running_postgres  # the repository root is on sys.path above

BATCH = 1000
SCHEMA = {
    "type": "object",
    "properties": {"build": {"type": "integer"}, "commit": {"type": "string"}},
    "required": ["build"],
}
RAW_COLUMNS = (
    "id, tenant_id, name, version, release, platform_id, package, description, payload, "
    "success, event_receiver_id, created_at"
)


def command(receiver_id: str, i: int) -> RecordEvent:
    return RecordEvent(
        name="app",
        version=f"1.{i % 50}",
        release="1",
        platform_id="x86_64",
        package="rpm",
        payload={"build": i, "commit": "0123456789abcdef0123456789abcdef01234567"},
        success=True,
        event_receiver_id=receiver_id,
    )


def raw_row(ids: UlidSource, tenant: str, receiver: str, i: int) -> tuple[Any, ...]:
    cmd = command(receiver, i)
    return (
        ids.new_id(),
        tenant,
        cmd.name,
        cmd.version,
        cmd.release,
        cmd.platform_id,
        cmd.package,
        cmd.description,
        msgspec.json.encode(cmd.payload).decode(),
        True,
        receiver,
        time.time(),
    )


async def rate(n: int, work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return n / (time.perf_counter() - start)


async def latencies(count: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


# --- raw drivers ---------------------------------------------------------------------------


class RawSqlite:
    def __init__(self, path: str) -> None:
        self.path = path

    async def __aenter__(self) -> RawSqlite:
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.execute(
            "CREATE TABLE raw_events (id TEXT PRIMARY KEY, tenant_id TEXT, name TEXT, "
            "version TEXT, release TEXT, platform_id TEXT, package TEXT, description TEXT, "
            "payload TEXT, success BOOLEAN, event_receiver_id TEXT, created_at REAL)"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    async def single(self, row: tuple[Any, ...]) -> None:
        await self.db.execute("BEGIN IMMEDIATE")
        await self.db.execute(
            f"INSERT INTO raw_events ({RAW_COLUMNS}) VALUES ({', '.join('?' * 12)})", row
        )
        await self.db.execute("COMMIT")

    async def batch(self, rows: list[tuple[Any, ...]]) -> None:
        await self.db.execute("BEGIN IMMEDIATE")
        await self.db.executemany(
            f"INSERT INTO raw_events ({RAW_COLUMNS}) VALUES ({', '.join('?' * 12)})", rows
        )
        await self.db.execute("COMMIT")


class RawPostgres:
    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> RawPostgres:
        self.db = await asyncpg.connect(self.url)
        await self.db.execute(
            "CREATE TABLE raw_events (id TEXT PRIMARY KEY, tenant_id TEXT, name TEXT, "
            "version TEXT, release TEXT, platform_id TEXT, package TEXT, description TEXT, "
            "payload TEXT, success BOOLEAN, event_receiver_id TEXT, created_at DOUBLE PRECISION)"
        )
        marks = ", ".join(f"${i}" for i in range(1, 13))
        self.sql = f"INSERT INTO raw_events ({RAW_COLUMNS}) VALUES ({marks})"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    async def single(self, row: tuple[Any, ...]) -> None:
        await self.db.execute(self.sql, *row)

    async def batch(self, rows: list[tuple[Any, ...]]) -> None:
        async with self.db.transaction():
            await self.db.executemany(self.sql, rows)


# --- the run -------------------------------------------------------------------------------


async def services_on(url: str) -> tuple[Services, SqlStore]:
    await migrate(url)
    store = await SqlStore.connect(url)
    return Services(Deps(store, SystemClock(), UlidSource(), ReceiverLru())), store


async def bench_backend(
    name: str, url: str, *, raw: RawSqlite | RawPostgres, singles: int, batches: int, large: int
) -> dict[str, Any]:
    services, store = await services_on(url)
    root = Actor(tenant_id="-", principal="bench").meta()
    tenant = await services.tenants.create(CreateTenant(slug="bench", name="Bench"), root)
    actor = Actor(tenant_id=tenant.id, principal="bench")
    receiver, _ = await services.receivers.register(
        actor, RegisterReceiver(name="build", type="bench.build", version="1", schema=SCHEMA)
    )
    ids = UlidSource()
    counter = iter(range(10**9))

    async def ours_singles() -> None:
        for _ in range(singles):
            await services.events.record(actor, command(receiver.id, next(counter)))

    async def raw_singles() -> None:
        for _ in range(singles):
            await raw.single(raw_row(ids, tenant.id, receiver.id, next(counter)))

    async def ours_batches() -> None:
        for _ in range(batches):
            await services.events.record_batch(
                actor, [command(receiver.id, next(counter)) for _ in range(BATCH)]
            )

    async def raw_batches() -> None:
        for _ in range(batches):
            await raw.batch(
                [raw_row(ids, tenant.id, receiver.id, next(counter)) for _ in range(BATCH)]
            )

    # warm up both paths (connections, caches, statement caches)
    await services.events.record(actor, command(receiver.id, 0))
    await raw.single(raw_row(ids, tenant.id, receiver.id, 0))

    result: dict[str, Any] = {"backend": name}
    result["raw_single"] = await rate(singles, raw_singles)
    result["ours_single"] = await rate(singles, ours_singles)
    result["raw_batch"] = await rate(batches * BATCH, raw_batches)
    result["ours_batch"] = await rate(batches * BATCH, ours_batches)

    async def fill_to(total: int) -> None:
        while True:
            async with store.read() as tx:
                head = await tx.log.head(tenant.id)
            if head >= total:
                return
            await services.events.record_batch(
                actor, [command(receiver.id, next(counter)) for _ in range(BATCH)]
            )

    async def one_append() -> None:
        await services.events.record(actor, command(receiver.id, next(counter)))

    async def one_page() -> None:
        await services.events.list(actor, EventFilter(), PageRequest())

    async def one_filtered_page() -> None:
        await services.events.list(actor, EventFilter(version="1.7"), PageRequest())

    for size in (10_000, large):
        await fill_to(size)
        result[f"append_{size}"] = await latencies(200, one_append)
        result[f"page_{size}"] = await latencies(200, one_page)
        result[f"filtered_page_{size}"] = await latencies(200, one_filtered_page)
    await store.close()
    return result


def report(results: list[dict[str, Any]], large: int) -> str:
    lines = [
        "| backend | path | raw driver ev/s | Waypost ev/s | ratio | target |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for path, target in (("single", 0.40), ("batch", 0.50)):
            raw, ours = r[f"raw_{path}"], r[f"ours_{path}"]
            lines.append(
                f"| {r['backend']} | {path} | {raw:,.0f} | {ours:,.0f} | {ours / raw:.0%} | "
                f">= {target:.0%} |"
            )
    lines += [
        "",
        "| backend | stored events | append p50 / p99 ms | page p50 / p99 ms "
        "| filtered page p50 / p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for size in (10_000, large):
            a, p, f = r[f"append_{size}"], r[f"page_{size}"], r[f"filtered_page_{size}"]
            lines.append(
                f"| {r['backend']} | {size:,} | {a[0]:.2f} / {a[1]:.2f} | {p[0]:.2f} / {p[1]:.2f} "
                f"| {f[0]:.2f} / {f[1]:.2f} |"
            )
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def backend(
    name: str, workdir: pathlib.Path
) -> AsyncIterator[tuple[str, RawSqlite | RawPostgres]]:
    if name == "sqlite":
        async with RawSqlite(str(workdir / "raw.db")) as raw:
            yield f"sqlite+aiosqlite:///{workdir / 'waypost.db'}", raw
        return
    with running_postgres() as server:
        url = server.create_database("bench")
        raw_url = server.create_database("raw")
        async with RawPostgres(raw_url) as raw:
            yield url, raw


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="waypost-bench-") as tmp:
        for name in args.backends.split(","):
            async with backend(name, pathlib.Path(tmp)) as (url, raw):
                print(f"# {name}: running ...", file=sys.stderr, flush=True)
                results.append(
                    await bench_backend(
                        name,
                        url,
                        raw=raw,
                        singles=args.singles,
                        batches=args.batches,
                        large=args.large,
                    )
                )
    print(report(results, args.large))


if __name__ == "__main__":
    asyncio.run(main())
