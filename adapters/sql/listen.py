"""The commit feed over PostgreSQL: LISTEN on one connection per process, fan-out in process.

Every write transaction of a `SqlStore` that appended sends `NOTIFY waypost_commits,
'<tenant id>:<new head>'` in the same round trip as its COMMIT (`notify_statement`),
so the notification exists exactly when the commit does, whichever process wrote.
`PgCommitFeed` holds one connection of its own (not one of the store's pool) that
listens on the channel, and hands each notification to the in-process `LocalFeed`,
which wakes the watches of that tenant: N waiters cost one connection and no work
while nothing commits.

The connection is opened by the first watch, and kept. When it is lost (the database
restarted), it is opened again with a growing pause, and every open watch is woken
once on each (re)connection: commits made while nobody listened are found by reading
again. A watch entered while the feed is not listening waits for it (within the
watch's time), so that a snapshot read inside the block cannot miss a commit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskGroup
from sqlalchemy.engine import make_url

from adapters.commits import LocalFeed, Watch, background

__all__ = ["CHANNEL", "PgCommitFeed", "notify_statement"]

log = logging.getLogger("waypost.commits")

CHANNEL = "waypost_commits"
#: Tenant ids that may be written into SQL as a literal (ULIDs are).
_SAFE_LITERAL = re.compile(r"[0-9A-Za-z_.-]{1,200}")
_FIRST_PAUSE, _LONGEST_PAUSE = 0.2, 10.0
#: How often a listening connection is checked when nothing happens on it.
_CHECK_SECONDS = 5.0


def notify_statement(tenant_id: str, position: int) -> str | None:
    """`SELECT pg_notify(...);`, to send before COMMIT in one simple query; None when the
    tenant id cannot be written as a literal (the caller then sends it with parameters)."""
    if _SAFE_LITERAL.fullmatch(tenant_id) is None:
        return None
    return f"SELECT pg_notify('{CHANNEL}', '{tenant_id}:{int(position)}'); "


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgCommitFeed(LocalFeed):
    """Commits of every process on the database, from LISTEN (see the module's docstring)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._dsn = _dsn(url)
        self._tasks: TaskGroup | None = None
        self._listening = anyio.Event()
        self._started = False
        self.connections = 0  # listening connections made (tests count reconnections)
        self._failing = False  # an outage was logged; its retries are not

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PgCommitFeed]:
        async with background(self) as tasks:
            self._tasks = tasks
            try:
                yield self
            finally:
                self._tasks = None

    async def _entered(self, watch: Watch) -> None:
        self._start()
        if not self._listening.is_set():
            with anyio.move_on_after(watch.remaining()):
                await self._listening.wait()

    async def _entered_all(self) -> None:
        # Not waited for: a watch of every tenant is woken once the connection listens
        # (its holder then looks again), and its holder polls meanwhile.
        self._start()

    def _start(self) -> None:
        if not self._started:
            if self._tasks is None:
                raise RuntimeError("a PgCommitFeed is used inside `async with feed.running()`")
            self._started = True
            self._tasks.start_soon(self._listen)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        tenant_id, _, position = str(payload).rpartition(":")
        if tenant_id and position.isdigit():
            self.committed(tenant_id, int(position))

    async def _listen(self) -> None:
        pause = _FIRST_PAUSE
        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Once per outage, as the stores log theirs (`adapters.sql.availability`).
                level = logging.DEBUG if self._failing else logging.WARNING
                log.log(level, "cannot listen for commits (%s); again in %.1f s", exc, pause)
                self._failing = True
                await anyio.sleep(pause)
                pause = min(pause * 2, _LONGEST_PAUSE)
                continue
            lost = anyio.Event()
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                self.connections += 1
                pause = _FIRST_PAUSE
                self._listening.set()
                if self._failing:
                    self._failing = False
                    log.info("listening for commits again")
                if self.connections > 1:
                    # Whatever committed while nobody listened. (Watches entered before
                    # the first connection waited for it before reading anything.)
                    self.wake_all()
                else:
                    self.wake_every_tenant()  # watches of all did not wait: look now
                while not lost.is_set() and not conn.is_closed():
                    with anyio.move_on_after(_CHECK_SECONDS):
                        await lost.wait()
                log.warning("the connection listening for commits was lost; reconnecting")
                self._failing = True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listening for commits failed (%s); reconnecting", exc)
                self._failing = True
            finally:
                if self._listening.is_set():
                    self._listening = anyio.Event()
                with anyio.CancelScope(shield=True), suppress(Exception):
                    await conn.close(timeout=2)  # it is being thrown away
            await anyio.sleep(pause)
