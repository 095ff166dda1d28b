"""What a recorded event's rows cost, b-tree by b-tree, against the bare insert.

    python bench/btrees.py [--backends sqlite,postgres] [--size 1000] [--batches 60]

The batch target of the speed work is a share of the raw driver's *bare insert* (each
event's own row into a table with a primary key only: one b-tree on PostgreSQL, two on
SQLite). A server storing an event writes more than that: the log row, the event row
(with its filter indexes) and the `latest` row the gate reads, in one transaction. This
measures what those rows cost the database alone, so that it is plain how much of the
target any implementation of this schema could reach: the raw driver writes them,
`--size` events per transaction (one executemany per table), into the tables as
`adapters/sql/tables.py` declares them, and into variants with some of their b-trees
left out; no HTTP, no validation, no encoding (every row is made before the clock
starts). Each variant has a database of its own, and all take turns with the bare
insert, transaction by transaction, so that a busy machine slows each alike. Reported:
the median per event (SQLite: this process's CPU time, as SQLite works in it;
PostgreSQL: wall time, as the server does) and the bare insert's time over it, the most
of the bare insert's rate those rows allow. Every event has an artifact of its own (a new
`latest` row), as in `bench/http_load.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.sql import tables as t
from adapters.system import UlidSource
from tests.servers import running_postgres

TENANT = "01JBENCHTENANT000000000000"
RECEIVER = "01JBENCHRECEIVER0000000000"
LOG_UNIQUES = frozenset({"uq_log_id", "uq_log_stream_version"})
EVENT_FILTERS = frozenset({"ix_events_receiver", "ix_events_nvrpp", "ix_events_created"})
VARIANTS: dict[str, frozenset[str]] = {
    "Waypost's rows (log, events, latest)": frozenset(),
    "without the log's two unique constraints": LOG_UNIQUES,
    "without the events' three filter indexes": EVENT_FILTERS,
    "without either": LOG_UNIQUES | EVENT_FILTERS,
    "log and events by primary key only, no latest": LOG_UNIQUES | EVENT_FILTERS | {"latest"},
}
"""Each variant: the names of the constraints, indexes and tables it leaves out."""

BARE = sa.Table(
    "raw_events",
    sa.MetaData(),
    sa.Column("id", sa.Text(), primary_key=True),
    *(sa.Column(name, sa.Text()) for name in ("tenant_id", "name", "version", "release")),
    *(sa.Column(name, sa.Text()) for name in ("platform_id", "package", "description")),
    sa.Column("payload", sa.Text()),
    sa.Column("success", sa.Boolean()),
    sa.Column("event_receiver_id", sa.Text()),
    sa.Column("created_at", t.UtcDateTime()),
)
"""The bare insert's table: the event's own row, a primary key only."""


def layout(leave_out: frozenset[str]) -> list[sa.Table]:
    """The log, events and latest tables as declared, less what `leave_out` names."""
    metadata = sa.MetaData()
    made = []
    for table in (t.log, t.events, t.latest):
        if table.name in leave_out:
            continue
        items: list[Any] = [sa.Column(c.name, c.type, nullable=c.nullable) for c in table.columns]
        # `constraints` is a set, so its order changes from one process to the next; the
        # copies are made in the order the table declared them, which CREATE TABLE keeps.
        for constraint in sorted(table.constraints, key=lambda c: c._creation_order):
            names = [c.name for c in constraint.columns]  # type: ignore[attr-defined]
            if constraint.name in leave_out:
                continue
            if isinstance(constraint, sa.PrimaryKeyConstraint):
                items.append(sa.PrimaryKeyConstraint(*names, name=constraint.name))
            elif isinstance(constraint, sa.UniqueConstraint):
                items.append(sa.UniqueConstraint(*names, name=constraint.name))
        items += [
            sa.Index(index.name, *[c.name for c in index.columns])
            for index in table.indexes
            if index.name not in leave_out
        ]
        made.append(sa.Table(table.name, metadata, *items, **table.kwargs))
    return made


def ddl(tables: Iterable[sa.Table], dialect: Dialect) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements of `tables` for `dialect`."""
    statements = []
    for table in tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements += [
            str(CreateIndex(index).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda index: str(index.name))
        ]
    return statements


def _insert(table: sa.Table, marks: Callable[[int], str]) -> str:
    columns = [c.name for c in table.columns]
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks(len(columns))})"
    if table.name == "latest":
        key = ", ".join(c.name for c in table.primary_key.columns)
        sql += f" ON CONFLICT ({key}) DO UPDATE SET event_id = excluded.event_id"
    return sql


Rows = dict[str, list[tuple[Any, ...]]]


class Events:
    """Rows for `size` new events at a time: the bare row, and Waypost's log, event and
    latest rows (the log's data as the server encodes it: the event, payload inside)."""

    def __init__(self, sqlite: bool) -> None:
        self.ids, self.sqlite, self.next = UlidSource(), sqlite, 0

    def make(self, size: int) -> Rows:
        now = datetime.now(UTC)  # noqa: TID251 - a benchmark reads the clock
        when: Any = now.replace(tzinfo=None).isoformat(" ", "microseconds") if self.sqlite else now
        rows: Rows = {"raw_events": [], "log": [], "events": [], "latest": []}
        for _ in range(size):
            i, self.next = self.next, self.next + 1
            event_id, log_id = self.ids.new_id(), self.ids.new_id()
            artifact = ("app", f"1.{i % 50}", str(i), "x86_64", "rpm")
            payload = msgspec.json.encode({"build": i}).decode()
            data = msgspec.json.encode(
                {"event": {"id": event_id, "tenant_id": TENANT, "name": artifact[0],
                           "version": artifact[1], "release": artifact[2],
                           "platform_id": artifact[3], "package": artifact[4], "description": "",
                           "payload": msgspec.Raw(payload.encode()), "success": True,
                           "event_receiver_id": RECEIVER, "created_at": now}}
            ).decode()  # fmt: skip
            rows["raw_events"].append(
                (event_id, TENANT, *artifact, "", payload, True, RECEIVER, when)
            )
            rows["log"].append((TENANT, i + 1, log_id, event_id, 1, "event.recorded", 1, None,
                                None, "bench", when, data))  # fmt: skip
            rows["events"].append((TENANT, event_id, *artifact, "", payload, True, RECEIVER, when))
            rows["latest"].append((TENANT, RECEIVER, *artifact, event_id))
        return rows


Writer = Callable[[Rows], Awaitable[float]]


def sqlite_writer(path: str, tables: list[sa.Table]) -> Writer:
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):  # as the server's
        db.execute(f"PRAGMA {pragma}")
    for statement in ddl(tables, sqlite_dialect.dialect()):
        db.execute(statement)
    inserts = [(table.name, _insert(table, lambda n: ", ".join("?" * n))) for table in tables]

    async def write(rows: Rows) -> float:
        start = time.process_time()
        db.execute("BEGIN IMMEDIATE")
        for name, sql in inserts:
            db.executemany(sql, rows[name])
        db.execute("COMMIT")
        return time.process_time() - start

    return write


async def postgres_writer(url: str, tables: list[sa.Table]) -> Writer:
    conn = await asyncpg.connect(url)
    for statement in ddl(tables, postgresql.dialect()):
        await conn.execute(statement)
    dollars = lambda n: ", ".join(f"${i}" for i in range(1, n + 1))  # noqa: E731
    inserts = [(table.name, _insert(table, dollars)) for table in tables]

    async def write(rows: Rows) -> float:
        start = time.perf_counter()
        async with conn.transaction():
            for name, sql in inserts:
                await conn.executemany(sql, rows[name])
        return time.perf_counter() - start

    return write


async def turns(writers: dict[str, Writer], sqlite: bool, args: argparse.Namespace) -> list[str]:
    events = Events(sqlite)
    taken: dict[str, list[float]] = {name: [] for name in writers}
    for turn in range(args.batches + 3):
        rows = events.make(args.size)
        for name, write in writers.items():
            took = await write(rows)
            if turn >= 3:  # the first turns warm caches
                taken[name].append(took / args.size * 1e6)
    bare = statistics.median(taken["bare insert"])
    lines = ["| rows | µs per event | the bare insert's time over it |", "|---|---:|---:|"]
    for name, samples in taken.items():
        us = statistics.median(samples)
        lines.append(f"| {name} | {us:.2f} | {bare / us:.0%} |")
    return lines


async def sqlite(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="waypost-btrees-") as tmp:
        writers = {"bare insert": sqlite_writer(f"{tmp}/bare.db", [BARE])}
        for n, (name, leave_out) in enumerate(VARIANTS.items()):
            writers[name] = sqlite_writer(f"{tmp}/{n}.db", layout(leave_out))
        return await turns(writers, True, args)


async def pg(args: argparse.Namespace) -> list[str]:
    with running_postgres() as server:
        writers = {"bare insert": await postgres_writer(server.create_database("bare"), [BARE])}
        for n, (name, leave_out) in enumerate(VARIANTS.items()):
            url = server.create_database(f"v{n}")
            writers[name] = await postgres_writer(url, layout(leave_out))
        return await turns(writers, False, args)


async def run(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    for backend in args.backends:
        print(f"# {backend} ...", file=sys.stderr, flush=True)
        title = f"{backend}, {args.size} events per transaction, median of {args.batches}:"
        lines += ["", title, "", *await (sqlite if backend == "sqlite" else pg)(args)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; known: sqlite, postgres")
    print("\n".join(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
