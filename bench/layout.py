"""Storage layout decisions, measured: each pair of choices takes turns on the same data.

    python bench/layout.py [--parts pg,sqlite] [--sizes 1,10,32,64,100,1000] [--reps 30]

- pg: PostgreSQL bulk rows. Appends of `size` recorded events through the store itself
  (`SqlStore`, one transaction each), once with the log and event rows sent by COPY and
  once inside the one-statement append as `unnest`ed arrays (`projection.COPY_AT_ROWS` moved
  for each run). This is how `COPY_AT_ROWS` was chosen: from that size on, COPY wins.
- sqlite: `latest` as a rowid table (migration 0002) against WITHOUT ROWID (0006), with
  the same appends; every event has an artifact of its own, so each upserts a new
  `latest` row (the other tables are the same on both sides).
The two sides of a pair run turn about, append by append, on two databases, so that a
busy machine slows both alike; the median per event is reported (PostgreSQL: wall time,
since the server does the work; SQLite: this process's CPU time, since it does).
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

import sqlalchemy as sa
from alembic import command

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.sql import projection as sql_projection
from adapters.sql.migrations import alembic_config, migrate
from adapters.sql.store import SqlStore
from adapters.system import UlidSource
from core.domain.model import Event, EventRecorded
from core.ports import AppendMeta, NewEntry
from tests.servers import running_postgres

TENANT = "01JBENCHTENANT000000000000"
RECEIVER = "01JBENCHRECEIVER0000000000"
META = AppendMeta(actor="bench", correlation_id="bench")


def entries(ids: UlidSource, size: int, release: Callable[[], int]) -> list[NewEntry]:
    """`size` recorded events; `release` makes each one's release (its artifact)."""
    now = datetime.now(UTC)  # noqa: TID251 - a benchmark reads the clock
    made = []
    for i in range(size):
        event = Event(
            id=ids.new_id(),
            tenant_id=TENANT,
            name="app",
            version=f"1.{i % 50}",
            release=str(release()),
            platform_id="x86_64",
            package="rpm",
            description="",
            payload={"build": i, "commit": "0123456789abcdef0123456789abcdef01234567"},
            success=True,
            event_receiver_id=RECEIVER,
            created_at=now,
        )
        made.append(
            NewEntry(
                id=ids.new_id(),
                event=EventRecorded(event=event),
                expected_version=0,
                occurred_at=now,
            )
        )
    return made


async def append(store: SqlStore, batch: list[NewEntry], copy: bool | None) -> float:
    """Seconds of wall time (PostgreSQL: `copy` says how) or of this process's CPU time
    (SQLite: `copy` is None)."""
    if copy is not None:
        sql_projection.COPY_AT_ROWS = 1 if copy else 10**9
    clock = time.perf_counter if copy is not None else time.process_time
    start = clock()
    async with store.write(TENANT) as tx:
        await tx.append(batch, META)
    return clock() - start


async def turns(
    stores: dict[str, SqlStore],
    args: argparse.Namespace,
    copy: Callable[[str], bool | None],
    unique_keys: bool,
) -> list[str]:
    ids, counter = UlidSource(), iter(range(10**9))
    release = (lambda: next(counter)) if unique_keys else (lambda: 0)
    first, second = stores
    lines = [
        f"| rows per append | {first} µs/event | {second} µs/event | {second} / {first} |",
        "|---:|---:|---:|---:|",
    ]
    for size in args.sizes:
        taken: dict[str, list[float]] = {name: [] for name in stores}
        for rep in range(args.reps + 3):
            for name, store in stores.items():
                took = await append(store, entries(ids, size, release), copy(name))
                if rep >= 3:  # the first ones warm caches and prepare statements
                    taken[name].append(took / size * 1e6)
        a, b = (statistics.median(taken[n]) for n in stores)
        lines.append(f"| {size} | {a:.1f} | {b:.1f} | {b / a:.0%} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


async def pg(args: argparse.Namespace) -> list[str]:
    with running_postgres() as server:
        stores = {}
        for name in ("unnest", "COPY"):
            url = server.create_database(f"bulk_{name.lower()}")
            await migrate(url)
            stores[name] = await SqlStore.connect(url)
        try:
            return await turns(stores, args, lambda name: name == "COPY", False)
        finally:
            for store in stores.values():
                await store.close()


def _upgrade(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    engine.dispose()


async def sqlite(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="waypost-layout-") as tmp:
        stores = {}
        for name, revision in (("rowid", "0002"), ("WITHOUT ROWID", "0006")):
            url = f"sqlite:///{tmp}/{revision}.db"
            await asyncio.to_thread(_upgrade, url, revision)
            stores[name] = await SqlStore.connect(url)
        try:
            return await turns(stores, args, lambda _: None, True)
        finally:
            for store in stores.values():
                await store.close()


async def run(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    titles = {"pg": "PostgreSQL: log and event rows", "sqlite": "SQLite: `latest`"}
    for part in args.parts:
        print(f"# {part} ...", file=sys.stderr, flush=True)
        lines += ["", f"{titles[part]}:", "", *await (pg if part == "pg" else sqlite)(args)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="pg,sqlite")
    parser.add_argument("--sizes", default="1,10,32,64,100,1000")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.parts = [part for part in args.parts.split(",") if part]
    unknown = set(args.parts) - {"pg", "sqlite"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; known: pg, sqlite")
    print("\n".join(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
