"""The store's connections: each database's own driver, with no SQLAlchemy on the hot path.

A `Connection` runs compiled statements (`queries.Query`) inside one transaction; the
store opens transactions with `SqliteDatabase.read()` / `.write()` and
`PgDatabase.transaction(begin, then)`. A transaction ends with COMMIT when its block
ends cleanly and nothing in it failed (`Connection.failed`), with ROLLBACK otherwise.

SQLite: the stdlib `sqlite3` module, called inline on the event loop's thread. A
small statement takes microseconds; handing it to a thread (aiosqlite) costs more
than running it (the price: a long read, such as a page of 1000 events, holds the
loop while it runs). Nothing may wait on a lock inside a call, so every connection
has busy_timeout=0 and a lock that is taken is retried from async code, with a
short sleep between tries (`_retry_busy`): another process holding the writer lock
delays this one's writers, it never freezes the loop. Writers of this process queue
on an anyio lock first (fair, and free when there is no contention) and share one
connection; `BEGIN IMMEDIATE` then takes SQLite's one writer lock up front. Readers
take a connection from a small free list; in WAL mode they never block the writer
nor wait for it. WAL checkpoints, with their fsync, run in a thread.

PostgreSQL: asyncpg, on connections from the SQLAlchemy engine's pool (so its size
and options apply), kept checked out between transactions in a free list of their
own (a checkout through the pool costs about half a round trip). The engine is in
AUTOCOMMIT mode: it never begins a transaction; this module sends BEGIN and COMMIT
itself, and asyncpg keeps every statement prepared. List queries
(`Connection.page`) run through the engine on the same connection, inside the same
transaction.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Protocol, cast

import anyio
import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from adapters.sql.queries import Copy, Page, Query

Row = Sequence[Any]

SQLITE_PRAGMAS = (
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=0",  # never wait inside a call: `_retry_busy` waits, asynchronously
    "PRAGMA foreign_keys=ON",
)
"""Every connection's settings. WAL mode belongs to the database file: the migrations set
it, and the writer connection makes sure of it when the store opens."""
BUSY_WAIT_LIMIT = 10.0
"""Seconds a transaction waits for a SQLite lock before giving up with `DatabaseBusy`
(the default of the setting `database.busy_timeout_seconds`)."""
_FIRST_PAUSE, _LONGEST_PAUSE = 0.0005, 0.02
_SQLITE_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_IDLE_READERS = 8

# sqlite3 binds a parameter that is not exactly an int, float, str or bytes (None, a bool)
# through its adapter protocol: no registered adapter, then a failed look for `__adapt__`
# and one for `__conform__`, each an exception made and dropped (about 0.5 us a
# parameter, a few per event). Registered, they are found at once; the values bound are
# the same (NULL; 0 or 1).
sqlite3.register_adapter(bool, int)
_answers_none = cast("Callable[[None], None]", {}.get)  # a C callable that answers None
sqlite3.register_adapter(type(None), _answers_none)


class DatabaseBusy(Exception):
    """A SQLite lock stayed taken (by another process) longer than the store waits."""


class Connection(Protocol):
    """One connection inside one transaction."""

    failed: bool
    """Set when a statement failed inside the transaction: it ends with ROLLBACK."""

    async def fetch(self, query: Query, args: Sequence[Any]) -> list[Row]: ...
    async def fetchrow(self, query: Query, args: Sequence[Any]) -> Row | None: ...
    async def execute(self, query: Query, args: Sequence[Any]) -> None: ...
    async def executemany(self, query: Query, rows: Sequence[Sequence[Any]]) -> None: ...
    async def copy(self, copy: Copy, rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows at once (binary COPY on PostgreSQL, executemany on SQLite)."""
        ...

    async def page(self, page: Page, values: dict[str, Any]) -> list[Row]: ...


# --- SQLite --------------------------------------------------------------------------------


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # pragma: no cover - Python < 3.11 has no error codes
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in _SQLITE_BUSY_CODES


async def _retry_busy(
    raw: sqlite3.Connection, statement: str, path: str, limit: float = BUSY_WAIT_LIMIT
) -> None:
    """Run `statement`; while SQLite answers BUSY, sleep a little (longer each time) and
    retry, for at most `limit` seconds."""
    pause = _FIRST_PAUSE
    deadline = time.monotonic() + limit
    while True:
        try:
            raw.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            if time.monotonic() >= deadline:
                raise DatabaseBusy(
                    f"the SQLite database {path} stayed locked by another connection for "
                    f"{limit:g} s ({exc})"
                ) from exc
        await anyio.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)


class SqliteConnection:
    __slots__ = ("_raw", "failed")

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw
        self.failed = False

    async def fetch(self, query: Query, args: Sequence[Any]) -> list[Row]:
        return self._raw.execute(query.sql, query.bind(args)).fetchall()

    async def fetchrow(self, query: Query, args: Sequence[Any]) -> Row | None:
        row: Row | None = self._raw.execute(query.sql, query.bind(args)).fetchone()
        return row

    async def execute(self, query: Query, args: Sequence[Any]) -> None:
        self._raw.execute(query.sql, query.bind(args))

    async def executemany(self, query: Query, rows: Sequence[Sequence[Any]]) -> None:
        self._raw.executemany(query.sql, query.bind_many(rows))

    async def copy(self, copy: Copy, rows: Sequence[Sequence[Any]]) -> None:
        self._raw.executemany(copy.insert.sql, copy.insert.bind_many(rows))

    async def page(self, page: Page, values: dict[str, Any]) -> list[Row]:
        assert page.query is not None
        return self._raw.execute(page.query.sql, page.query.bind_named(values)).fetchall()


def _lower_priority(niceness: int) -> None:
    """This thread's CPU priority lowered to `niceness` (Linux: a thread has its own; a
    thread may always lower its priority, never raise it back)."""
    if sys.platform == "linux":
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class SqliteDatabase:
    """One writer connection (behind an anyio lock) and a free list of reader connections.

    Checkpoints (copying the WAL back into the database file, with an fsync) run in a
    thread of their own: SQLite's automatic checkpoint would run inside a COMMIT on the
    event loop and stall it for milliseconds every few hundred pages written. The writer
    starts one, PASSIVE (it waits for no one), after every `CHECKPOINT_AFTER_ROWS` rows
    written, unless one is running. A PASSIVE checkpoint copies pages back but never
    empties the WAL: SQLite starts it over only when a writer finds every frame copied and
    no reader in it, which under steady load is never (seen: a 1.5 GB WAL for a 32 MB
    database after 80 s, reads slowing and memory growing with it). So once the WAL holds
    `RESTART_AFTER_FRAMES` frames, the next checkpoint also runs RESTART: it waits (at most
    `RESTART_WAIT_MS`, holding writers back meanwhile) for the readers in the WAL to
    finish, which takes the length of a read, and the next write starts the WAL over from
    its beginning; PASSIVE passes catch up first, so that it has few frames to copy
    (`_catch_up`). The file keeps its largest size and is written over: TRUNCATE, which
    also cuts the file to nothing (and syncs that), held the writers back 23-38 ms each
    time against 4-15 ms, and at 683 single events per second a request's p99 went from
    29-39 ms to 12 ms with RESTART. A reader that comes between a RESTART and the next
    write can keep that write from starting over (it appends), and the file grows; so a
    WAL file larger than `TRUNCATE_PAST_BYTES` is TRUNCATEd instead, which always empties
    it.

    A PASSIVE checkpoint runs at the lowest CPU priority (niceness `CHECKPOINT_NICENESS`,
    on Linux): copying pages is housekeeping, and where it shares a CPU with the event
    loop it made every request in flight wait (p99 88 ms -> 41-49 ms at 70% of a server's
    throughput on one CPU). One that RESTARTs runs at the process's own priority: it holds
    the writers back, so it must not wait for the CPU they leave it.

    Planner statistics (`analyze`): SQLite loads `sqlite_stat1` when a connection opens
    and never again by itself, so after an ANALYZE the reader connections opened before
    it are closed rather than reused (each reader remembers the statistics' generation it
    was opened in).
    """

    CHECKPOINT_AFTER_ROWS = 2000
    #: WAL frames (pages) after which a checkpoint starts the WAL over (~16 MB of 4 KiB
    #: pages; a checkpoint runs every `CHECKPOINT_AFTER_ROWS`, so it holds a few more).
    RESTART_AFTER_FRAMES = 4096
    RESTART_WAIT_MS = 200
    #: A WAL file this large was not started over by its RESTARTs: TRUNCATE it (64 MiB; at
    #: 683 events/s the file settled near 45 MB, a RESTART every ~11,000 frames).
    TRUNCATE_PAST_BYTES = 64 * 1024 * 1024
    CHECKPOINT_NICENESS = 19
    #: Before a RESTART, PASSIVE passes catch up (at most this many) until one finds at
    #: most `CAUGHT_UP_FRAMES` frames new since the pass before (see `_catch_up`).
    CATCH_UP_PASSES = 4
    CAUGHT_UP_FRAMES = 64

    def __init__(self, path: str, busy_timeout: float = BUSY_WAIT_LIMIT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._writer = self._open()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA wal_autocheckpoint=0")  # see `_checkpoint`
        self._writer_lock = anyio.Lock(fast_acquire=True)  # no checkpoint when uncontended
        self._readers: list[tuple[sqlite3.Connection, int]] = []  # idle, with their generation
        self._generation = 0  # of the planner statistics: one more after each `analyze`
        self._checkpointer: threading.Thread | None = None
        self._checkpointed_at = 0  # the writer's total_changes when the last one started
        self._restart = False  # the next checkpoint starts the WAL over (RESTART)

    def _open(self) -> sqlite3.Connection:
        raw = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        try:
            for pragma in SQLITE_PRAGMAS:
                raw.execute(pragma)
        except BaseException:
            raw.close()
            raise
        return raw

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqliteConnection]:
        raw, generation = self._readers.pop() if self._readers else (self._open(), self._generation)
        try:
            raw.execute("BEGIN")
            # The snapshot starts at the first read: take it here, where BUSY can be waited for.
            await _retry_busy(raw, "PRAGMA schema_version", self.path, self.busy_timeout)
            yield SqliteConnection(raw)
        except BaseException:
            self._end(raw, generation, "ROLLBACK")
            raise
        self._end(raw, generation, "COMMIT")

    def _end(self, raw: sqlite3.Connection, generation: int, statement: str) -> None:
        try:
            if raw.in_transaction:
                raw.execute(statement)
        except sqlite3.Error:
            raw.close()
            raise
        if generation == self._generation and len(self._readers) < _IDLE_READERS:
            self._readers.append((raw, generation))
        else:  # too many idle, or planning with statistics older than the last ANALYZE
            raw.close()

    async def analyze(self, statements: Sequence[str]) -> bool:
        """Run `statements` (ANALYZE and its pragmas) in a write transaction of their own,
        then let the readers reopen with the new statistics. False when the database did
        not let them run (busy past the wait, read-only): statistics are an optimization,
        never a reason to fail a request."""
        async with self._writer_lock:
            raw = self._writer
            try:
                await _retry_busy(raw, "BEGIN IMMEDIATE", self.path, self.busy_timeout)
                for statement in statements:
                    raw.execute(statement)
                raw.execute("COMMIT")
            except (sqlite3.Error, DatabaseBusy):
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                return False
        self._generation += 1
        stale, self._readers = self._readers, []
        for reader, _ in stale:
            reader.close()
        return True

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteConnection]:
        """BEGIN IMMEDIATE: SQLite's writer lock, taken before anything is read."""
        async with self._writer_lock:
            raw = self._writer
            await _retry_busy(raw, "BEGIN IMMEDIATE", self.path, self.busy_timeout)
            conn = SqliteConnection(raw)
            try:
                yield conn
                raw.execute("ROLLBACK" if conn.failed else "COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            if raw.total_changes - self._checkpointed_at >= self.CHECKPOINT_AFTER_ROWS:
                self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        if self._checkpointer is not None and self._checkpointer.is_alive():
            return
        self._checkpointed_at = self._writer.total_changes
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name="waypost-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        """In a thread of its own, on a connection of its own: PASSIVE at the lowest
        priority, or PASSIVE then RESTART (TRUNCATE for a file past `TRUNCATE_PAST_BYTES`)
        at the process's own when the last one found the WAL past `RESTART_AFTER_FRAMES`
        (or could not start it over: busy)."""
        restart = self._restart
        if not restart:
            _lower_priority(self.CHECKPOINT_NICENESS)
        try:
            raw = sqlite3.connect(self.path, isolation_level=None, timeout=0)
            try:
                _, frames, _ = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if restart:
                    self._catch_up(raw, frames)
                    mode = "TRUNCATE" if self._wal_bytes() > self.TRUNCATE_PAST_BYTES else "RESTART"
                    raw.execute(f"PRAGMA busy_timeout={self.RESTART_WAIT_MS}")
                    busy, _, _ = raw.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                    self._restart = bool(busy)
                else:
                    self._restart = frames >= self.RESTART_AFTER_FRAMES
            finally:
                raw.close()
        except sqlite3.Error:
            pass  # the next one will do it; a checkpoint is housekeeping, not a write

    def _catch_up(self, raw: sqlite3.Connection, frames: int) -> int:
        """PASSIVE again while writes keep coming, so that the RESTART copies (and syncs)
        only what came in since the last pass: it holds the writers back while it copies,
        the PASSIVE passes do not. Each pass copies what came in during the one before,
        ever fewer frames; it stops at a pass that found at most `CAUGHT_UP_FRAMES` new
        (or after `CATCH_UP_PASSES`). `frames`: the WAL's frames at the pass before.
        Returns the passes it ran. (Without them, at 600 single events/s, the RESTART
        had the hundreds of frames written during the first pass to copy and sync: it
        took 4-15 ms on a new database and 10-27 ms at 500 MB, and the events' p99 grew
        with the database: 6.5-7.4 ms new, 11.6-14.1 ms at 650 MB; with them 3.5-5.4 and
        5.3-7.4 ms, two runs each.)"""
        for passes in range(1, self.CATCH_UP_PASSES + 1):
            _, now, _ = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            new, frames = now - frames, now
            if new <= self.CAUGHT_UP_FRAMES:  # negative: a writer started the WAL over
                return passes
        return self.CATCH_UP_PASSES

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0

    async def close(self) -> None:
        checkpointer = self._checkpointer
        if checkpointer is not None:
            await anyio.to_thread.run_sync(checkpointer.join)
        for raw in (*(reader for reader, _ in self._readers), self._writer):
            raw.close()
        self._readers.clear()


# --- PostgreSQL ----------------------------------------------------------------------------

_DISCONNECTS = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    ConnectionError,
    OSError,
)
_UNUSABLE = (*_DISCONNECTS, asyncpg.exceptions.InternalClientError)
"""Errors after which a connection's state is unknown: it is closed, never reused."""


class PgConnection:
    __slots__ = ("_engine", "_fairy", "_sa", "before_commit", "failed", "raw")

    def __init__(self, engine: AsyncEngine, fairy: PoolProxiedConnection) -> None:
        self._engine = engine
        self._fairy = fairy
        self._sa: AsyncConnection | None = None
        self.raw: asyncpg.Connection = fairy.driver_connection  # type: ignore[assignment]
        self.failed = False
        #: Statements sent with the COMMIT, in its simple query (NOTIFY): ends with "; ".
        self.before_commit = ""

    async def fetch(self, query: Query, args: Sequence[Any]) -> list[Row]:
        return cast(list[Row], await self.raw.fetch(query.sql, *query.bind(args)))

    async def fetchrow(self, query: Query, args: Sequence[Any]) -> Row | None:
        return cast(Row | None, await self.raw.fetchrow(query.sql, *query.bind(args)))

    async def execute(self, query: Query, args: Sequence[Any]) -> None:
        await self.raw.execute(query.sql, *query.bind(args))

    async def executemany(self, query: Query, rows: Sequence[Sequence[Any]]) -> None:
        await self.raw.executemany(query.sql, query.bind_many(rows))

    async def copy(self, copy: Copy, rows: Sequence[Sequence[Any]]) -> None:
        """COPY ... FROM STDIN in the binary format (asyncpg encodes the rows in C)."""
        await self.raw.copy_records_to_table(copy.table, records=rows, columns=copy.columns)

    async def page(self, page: Page, values: dict[str, Any]) -> list[Row]:
        """Through the engine, on this connection and in its transaction (the engine is
        in AUTOCOMMIT mode: it begins nothing of its own)."""
        if self._sa is None:
            sync = sa.Connection(self._engine.sync_engine, connection=self._fairy)
            self._sa = AsyncConnection(self._engine, sync)
        result = await self._sa.execute(page.stmt, values)
        return list(result.all())


class PgDatabase:
    """Transactions on asyncpg connections of the engine's pool (see the module's docstring)."""

    def __init__(self, engine: AsyncEngine, max_connections: int) -> None:
        self.engine = engine
        self._idle: list[PoolProxiedConnection] = []
        # Connections leave the engine's pool once and then circulate through `_idle`,
        # never back to the pool, so the pool's own queue would never wake a waiter.
        # This semaphore (FIFO) is the one bound on connections in use: a lease holds a
        # slot until its connection is back in `_idle` or discarded.
        self._slots = anyio.Semaphore(max_connections)

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[PgConnection]:
        """A connection for one transaction or statement; the caller returns it to `_idle`
        or discards it before the lease ends."""
        async with self._slots:
            yield await self._checkout()

    async def _checkout(self) -> PgConnection:
        while self._idle:
            fairy = self._idle.pop()
            conn = PgConnection(self.engine, fairy)
            if fairy.is_valid and not conn.raw.is_closed():
                return conn
            await self._discard(conn, None)  # closed while idle (the server went away ...)
        return PgConnection(self.engine, await self.engine.raw_connection())

    async def _discard(self, conn: PgConnection, exc: BaseException | None) -> None:
        """Close a connection whose state is unknown (or that is closed already); after a
        disconnect, the idle ones too (a server that went away took them all)."""
        doomed = [conn._fairy]
        if isinstance(exc, _DISCONNECTS):
            doomed += self._idle
            self._idle.clear()
        with anyio.CancelScope(shield=True):
            for fairy in doomed:
                with suppress(Exception):  # it is being thrown away
                    await greenlet_spawn(fairy.invalidate, exc)

    @asynccontextmanager
    async def transaction(
        self, begin: str, then: Sequence[tuple[Query, Sequence[Any]]] = ()
    ) -> AsyncIterator[PgConnection]:
        """A transaction: `begin` is a simple query (BEGIN ...; more ...: one round trip),
        `then` statements to run before the block."""
        async with self._lease() as conn:
            try:
                await conn.raw.execute(begin)
                for query, args in then:
                    await conn.execute(query, args)
                yield conn
                await conn.raw.execute("ROLLBACK" if conn.failed else conn.before_commit + "COMMIT")
            except BaseException as exc:
                await self._rollback(conn, exc)
                raise
            self._idle.append(conn._fairy)

    async def _rollback(self, conn: PgConnection, exc: BaseException) -> None:
        """ROLLBACK, shielded from cancellation and bounded in time; a connection that
        cannot say it rolled back is closed instead (the server then rolls back)."""
        rolled_back = False
        if not isinstance(exc, _UNUSABLE):
            with anyio.move_on_after(5, shield=True):
                try:
                    if conn.raw.is_in_transaction():
                        await conn.raw.execute("ROLLBACK")
                    rolled_back = not conn.raw.is_closed()
                except Exception:  # noqa: S110 - the connection is closed below
                    pass
        if rolled_back:
            self._idle.append(conn._fairy)
        else:
            await self._discard(conn, exc)

    async def run(self, statement: str) -> None:
        """One statement outside any transaction (ANALYZE)."""
        async with self._lease() as conn:
            try:
                await conn.raw.execute(statement)
            except BaseException as exc:
                await self._rollback(conn, exc)
                raise
            self._idle.append(conn._fairy)

    async def fetch(self, query: Query, args: Sequence[Any]) -> list[Row]:
        """One statement, a transaction of its own (the engine autocommits): one round trip
        where BEGIN, the statement and COMMIT would take three."""
        async with self._lease() as conn:
            try:
                rows = await conn.fetch(query, args)
            except BaseException as exc:
                await self._rollback(conn, exc)
                raise
            self._idle.append(conn._fairy)
        return rows

    async def fetchrow(self, query: Query, args: Sequence[Any]) -> Row | None:
        """`fetch`, for a statement that answers one row or none."""
        rows = await self.fetch(query, args)
        return rows[0] if rows else None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for fairy in idle:
            await greenlet_spawn(fairy.close)
        await self.engine.dispose()
