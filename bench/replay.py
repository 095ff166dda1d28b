"""Replay throughput: `waypost replay`'s use case against a raw-driver scan of the log.

    python bench/replay.py [--backends sqlite,postgres] [--entries 100000] [--tenants 2]

For each backend, in one run: a fresh database filled through the use cases (batches of
1000 events of one receiver in a group, per tenant), then
- "raw scan of the log" (the reference): the driver alone reading every log row of every
  tenant in position order, 2000 rows a query (sqlite3; asyncpg), decoding nothing;
- "replay": `Replay.rebuild` (what `waypost replay` runs): each tenant's read models
  rebuilt from its log in one transaction, entries decoded and projected; the events are
  staged and merged, so rows already as the log makes them are left in place (the usual
  case: a verification, or a fix that changes few rows);
- "rewrite": the same after the `events` table was emptied by the raw driver, so that
  every event row is written again (a restore of the log alone; the worst case).
Entries per second of each, and the replay's ratio to the scan. The target is 50,000
entries/s.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sqlite3
import sys
import tempfile
import time

import asyncpg

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import BATCH, command, gated_receiver, services_on
from core.domain.commands import CreateTenant
from core.ports import AppendMeta
from core.usecases import Actor
from tests.servers import running_postgres

SCAN = 2000
TARGET = 50_000


async def fill(url: str, entries: int, tenants: int) -> None:
    services, store = await services_on(url)
    try:
        per_tenant = entries // tenants
        for n in range(tenants):
            tenant = await services.tenants.create(
                CreateTenant(slug=f"bench-{n}", name=f"Bench {n}"), AppendMeta(actor="bench")
            )
            actor = Actor(tenant_id=tenant.id, principal="bench")
            receiver = await gated_receiver(services, actor)
            for start in range(0, per_tenant, BATCH):
                await services.events.record_batch(
                    actor, [command(receiver, start + i) for i in range(BATCH)]
                )
    finally:
        await store.close()


def scan_sqlite(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        count = 0
        tenants = [row[0] for row in conn.execute("SELECT tenant_id FROM log_heads")]
        for tenant in tenants:
            after = 0
            while True:
                rows = conn.execute(
                    "SELECT position, type, schema_version, data FROM log "
                    "WHERE tenant_id = ? AND position > ? ORDER BY position LIMIT ?",
                    (tenant, after, SCAN),
                ).fetchall()
                count += len(rows)
                if len(rows) < SCAN:
                    break
                after = rows[-1][0]
        return count
    finally:
        conn.close()


async def scan_postgres(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count = 0
        tenants = [row[0] for row in await conn.fetch("SELECT tenant_id FROM log_heads")]
        query = (
            "SELECT position, type, schema_version, data FROM log "
            "WHERE tenant_id = $1 AND position > $2 ORDER BY position LIMIT $3"
        )
        for tenant in tenants:
            after = 0
            while True:
                rows = await conn.fetch(query, tenant, after, SCAN)
                count += len(rows)
                if len(rows) < SCAN:
                    break
                after = rows[-1][0]
        return count
    finally:
        await conn.close()


async def replay(url: str) -> tuple[int, float]:
    services, store = await services_on(url)
    try:
        start = time.perf_counter()
        done = await services.replay.rebuild()
        return done.applied, time.perf_counter() - start
    finally:
        await store.close()


async def empty_events(name: str, url: str) -> None:
    if name == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute("DELETE FROM events")
        conn.close()
        return
    pg = await asyncpg.connect(url)
    try:
        await pg.execute("DELETE FROM events")
        await pg.execute("VACUUM ANALYZE events")
    finally:
        await pg.close()


async def bench(name: str, url: str, args: argparse.Namespace) -> str:
    await fill(url, args.entries, args.tenants)
    start = time.perf_counter()
    if name == "sqlite":
        scanned = scan_sqlite(url.removeprefix("sqlite:///"))
    else:
        scanned = await scan_postgres(url)
    scan_rate = scanned / (time.perf_counter() - start)
    applied, seconds = await replay(url)
    rate = applied / seconds
    await empty_events(name, url)
    rewritten, seconds = await replay(url)
    rewrite_rate = rewritten / seconds
    verdict = "meets" if rate >= TARGET else "below"
    return (
        f"| {name:<10} | {applied:>9,} | {scan_rate:>14,.0f} | {rate:>12,.0f} | "
        f"{rate / scan_rate:>6.1%} | {rewrite_rate:>13,.0f} | {verdict} {TARGET:,}/s |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=2)
    args = parser.parse_args()
    rows = [
        "| backend    | entries   | raw scan ent/s | replay ent/s | ratio  "
        "| rewrite ent/s | target          |",
        "|------------|-----------|----------------|--------------|--------"
        "|---------------|-----------------|",
    ]
    for name in args.backends.split(","):
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as work:
                rows.append(await bench(name, f"sqlite:///{work}/waypost.db", args))
        elif name == "postgres":
            with running_postgres() as server:
                rows.append(await bench(name, server.create_database("bench"), args))
        else:
            parser.error(f"unknown backend {name!r}")
        print(rows[-1], flush=True)
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
