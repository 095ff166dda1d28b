"""SQLite's WAL under steady load stays bounded.

A PASSIVE checkpoint copies the WAL's pages back into the database but never empties
the WAL; SQLite starts it over only when a writer finds every frame copied and no reader
in it. Under steady load some reader always is, and the WAL grew without end (1.5 GB for
a 32 MB database after 80 s at 374 requests/s). Here readers overlap without a gap while
rows are written: the WAL must still be started over from time to time.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import sqlite3
import sys
import threading

import anyio
import anyio.lowlevel
import pytest

from adapters.sql.drivers import SqliteDatabase
from adapters.sql.queries import Query

pytestmark = pytest.mark.anyio

INSERT = Query("INSERT INTO t (body) VALUES (?)", ("body",), None)
READ = Query("SELECT count(*) FROM t", (), None)


def size(path: pathlib.Path) -> int:
    return path.stat().st_size if path.exists() else 0


ROWS, BODY = 1500, 2000


async def test_the_wal_is_started_over_although_readers_never_stop(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "wal.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    db = SqliteDatabase(str(path))
    db.CHECKPOINT_AFTER_ROWS = 50
    db.RESTART_AFTER_FRAMES = 64
    db.TRUNCATE_PAST_BYTES = 512 * 1024
    wal = pathlib.Path(f"{path}-wal")
    sizes: list[int] = []
    writing = True

    async def readers() -> None:
        # two readers in turn, each opened before the other ends: one is always in the WAL
        held = db.read()
        conn = await held.__aenter__()
        await conn.fetch(READ, ())
        while writing:
            after = db.read()
            then = await after.__aenter__()
            await then.fetch(READ, ())
            await held.__aexit__(None, None, None)
            held = after
            await anyio.sleep(0.002)
        await held.__aexit__(None, None, None)

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(readers)
            for n in range(ROWS):
                async with db.write() as conn:
                    await conn.execute(INSERT, (os.urandom(BODY),))
                if n % 10 == 0:
                    sizes.append(size(wal))
                    await anyio.lowlevel.checkpoint()
            writing = False
    finally:
        await db.close()
    # emptied at least once (readers kept RESTARTs from taking: the file passed its bound
    # and was TRUNCATEd): without it the file only ever grows
    assert any(later < earlier for earlier, later in itertools.pairwise(sizes)), sizes


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own CPU priority is Linux's")
def test_passive_checkpoints_give_way_to_requests_and_the_one_that_restarts_does_not(
    tmp_path: pathlib.Path,
) -> None:
    """A PASSIVE checkpoint runs at the lowest CPU priority; the one that found the WAL past
    its bound has the next RESTART it, at the process's own priority (it holds writers
    back), and the next write goes to the WAL's start: the file does not grow."""
    path = tmp_path / "nice.db"
    db = SqliteDatabase(str(path))
    db.RESTART_AFTER_FRAMES = 8
    own = os.getpriority(os.PRIO_PROCESS, 0)
    wal = pathlib.Path(f"{path}-wal")
    seen: list[tuple[int, bool, int]] = []

    def checkpoint() -> None:
        db._checkpoint()
        niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen.append((niceness, db._restart, size(wal)))

    try:
        with sqlite3.connect(path) as setup:
            setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
            setup.executemany("INSERT INTO t (body) VALUES (?)", [(os.urandom(4000),)] * 40)
        for _ in range(2):
            thread = threading.Thread(target=checkpoint)
            thread.start()
            thread.join()
        with sqlite3.connect(path) as later:
            later.execute("INSERT INTO t (body) VALUES (?)", (os.urandom(4000),))
    finally:
        anyio.run(db.close)
    (passive, found_big, kept), (restarting, still, at_restart) = seen
    assert (passive, found_big) == (max(own, 19), True)
    assert kept > 0  # PASSIVE copies the pages back, the WAL keeps them
    assert (restarting, still) == (own, False)
    assert size(wal) == at_restart  # the write went to the start of the WAL, not its end


async def test_a_wal_file_past_its_bound_is_truncated(tmp_path: pathlib.Path) -> None:
    """RESTARTs that readers kept from taking let the WAL file grow on: past
    `TRUNCATE_PAST_BYTES` the checkpoint TRUNCATEs it, which leaves nothing in it whatever
    readers come next."""
    path = tmp_path / "big.db"
    db = SqliteDatabase(str(path))
    db.RESTART_AFTER_FRAMES = 8
    db.TRUNCATE_PAST_BYTES = 64 * 1024
    try:
        with sqlite3.connect(path) as setup:
            setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
            setup.executemany("INSERT INTO t (body) VALUES (?)", [(os.urandom(4000),)] * 40)
        db._restart = True
        await anyio.to_thread.run_sync(db._checkpoint)
    finally:
        await db.close()
    assert size(pathlib.Path(f"{path}-wal")) == 0
    assert not db._restart


class _WritesDuringEachPass:
    """The checkpoint's connection, with `rows` rows written by another connection before
    each of its first `passes` statements: writes that come in while it checkpoints. A
    reader, moved to the newest snapshot after each write, stays in the WAL (as one
    always is under steady load), so no write starts the WAL over."""

    def __init__(self, path: pathlib.Path, rows: int, passes: int) -> None:
        self.raw = sqlite3.connect(path, isolation_level=None)
        self.writer = sqlite3.connect(path, isolation_level=None)
        self.reader = sqlite3.connect(path, isolation_level=None)
        self.rows, self.passes, self.statements = rows, passes, 0
        self._read()

    def _read(self) -> None:
        if self.reader.in_transaction:
            self.reader.execute("COMMIT")
        self.reader.execute("BEGIN")
        self.reader.execute("SELECT count(*) FROM t").fetchone()

    def execute(self, sql: str) -> sqlite3.Cursor:
        if self.statements < self.passes:
            self.writer.executemany(
                "INSERT INTO t (body) VALUES (?)", [(os.urandom(4000),)] * self.rows
            )
            self._read()
        self.statements += 1
        return self.raw.execute(sql)

    def close(self) -> None:
        for conn in (self.reader, self.raw, self.writer):
            conn.close()


def _frames(path: pathlib.Path) -> tuple[int, int]:
    """The WAL's frames, and how many of them are copied back (after a PASSIVE)."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return frames, copied


@pytest.mark.parametrize(
    ("writes", "passes"),
    [
        (0, 1),  # nothing came in since the pass before: one pass finds nothing new
        (1, 2),  # a burst since the pass before: the first copies it, the second finds none
        (3, 4),  # a burst before each of three passes: the fourth finds nothing new
        (9, 4),  # writes that never stop: bounded by CATCH_UP_PASSES
    ],
)
def test_passes_catch_up_before_a_restart_until_one_finds_few_new_frames(
    tmp_path: pathlib.Path, writes: int, passes: int
) -> None:
    """Before a RESTART (which holds the writers back while it copies), PASSIVE passes
    copy what came in during the pass before, until one finds at most `CAUGHT_UP_FRAMES`
    new frames or `CATCH_UP_PASSES` ran."""
    path = tmp_path / "catch.db"
    db = SqliteDatabase(str(path))
    try:
        with sqlite3.connect(path) as setup:
            setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        frames, _ = _frames(path)
        # 100 rows of 4 KB: well over CAUGHT_UP_FRAMES (64) new frames per burst
        conn = _WritesDuringEachPass(path, rows=100, passes=writes)
        try:
            ran = db._catch_up(conn, frames)  # type: ignore[arg-type]
        finally:
            conn.close()
        assert (db.CATCH_UP_PASSES, db.CAUGHT_UP_FRAMES) == (4, 64)
        assert ran == passes
        if writes < db.CATCH_UP_PASSES:  # caught up: every frame copied back
            frames, copied = _frames(path)
            assert frames == copied
    finally:
        anyio.run(db.close)


def test_a_restart_comes_after_the_passes_that_catch_up(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint that RESTARTs catches up first; one that does not, does not."""
    path = tmp_path / "order.db"
    db = SqliteDatabase(str(path))
    caught_up: list[int] = []
    catch_up = db._catch_up

    def counted(raw: sqlite3.Connection, frames: int) -> int:
        caught_up.append(frames)
        return catch_up(raw, frames)

    monkeypatch.setattr(db, "_catch_up", counted)
    try:
        with sqlite3.connect(path) as setup:
            setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
            setup.executemany("INSERT INTO t (body) VALUES (?)", [(os.urandom(4000),)] * 40)
        db._checkpoint()  # PASSIVE alone
        assert caught_up == []
        db._restart = True
        db._checkpoint()
        [frames] = caught_up  # once, from the WAL's frames at the first pass
        assert frames > 40
        assert not db._restart
        assert size(pathlib.Path(f"{path}-wal")) > 0  # RESTART keeps the file, ...
        with sqlite3.connect(path) as later:
            later.execute("INSERT INTO t (body) VALUES (?)", (os.urandom(4000),))
        assert _frames(path)[0] < 5  # ... and the next write went to its start
    finally:
        anyio.run(db.close)
