"""The commit feed (`core.ports.CommitFeed`) inside one process, and with a head poller.

`LocalFeed` keeps, per tenant, the highest log position it was told of and the open
watches. A store of this process calls `committed(tenant, position)` after each commit
that appended (`MemoryStore.on_commit`, `SqlStore.on_commit`); the watches of that
tenant wake, and a watch that waits for a position already passed returns at once.
Nothing runs while nobody waits and nothing commits: a waiter is a parked task.

`PolledFeed` adds what another process committed to the same SQLite file: one task
per process reads the heads of the watched tenants every `interval` seconds, and only
while there are watches (the first one starts it, it ends after the last one left).
PostgreSQL has no poller: `adapters.sql.listen.PgCommitFeed` listens for the NOTIFY
every write transaction sends as it commits.

A feed that may have missed commits (a lost connection) calls `wake_all`: every open
watch's next `wait` returns True once, and its caller reads again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from core.ports import Store

__all__ = ["DEFAULT_POLL_SECONDS", "LocalFeed", "PolledFeed", "Watch", "background"]

log = logging.getLogger("waypost.commits")

#: How often a `PolledFeed` reads the watched tenants' heads while someone waits.
DEFAULT_POLL_SECONDS = 0.1


class Watch:
    __slots__ = ("_deadline", "_event", "_feed", "_stale", "tenant_id")

    def __init__(self, feed: LocalFeed, tenant_id: str, seconds: float | None) -> None:
        self._feed = feed
        self.tenant_id = tenant_id
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._event: anyio.Event | None = None
        self._stale = False

    def remaining(self) -> float:
        """Seconds left (infinity for a watch without a limit)."""
        if self._deadline is None:
            return float("inf")
        return max(0.0, self._deadline - time.monotonic())

    def wake(self, *, stale: bool = False) -> None:
        self._stale = self._stale or stale
        if self._event is not None:
            self._event.set()

    async def wait(self, after: int) -> bool:
        while True:
            if self._stale:
                self._stale = False
                return True
            if self._feed.head(self.tenant_id) > after:
                return True
            remaining = self.remaining()
            if remaining <= 0:
                return False
            self._event = event = anyio.Event()
            try:
                with anyio.move_on_after(remaining):
                    await event.wait()
            finally:
                self._event = None


class LocalFeed:
    """The commit feed of one process's own commits (the memory store's whole truth)."""

    def __init__(self) -> None:
        self._heads: dict[str, int] = {}
        self._watches: dict[str, set[Watch]] = {}

    def head(self, tenant_id: str) -> int:
        """The highest position of the tenant's log this feed was told of (0: none)."""
        return self._heads.get(tenant_id, 0)

    @property
    def watching(self) -> int:
        """How many watches are open."""
        return sum(len(watches) for watches in self._watches.values())

    def committed(self, tenant_id: str, position: int) -> None:
        """The tenant's log now reaches `position`: wake its watches (if it grew)."""
        if position <= self._heads.get(tenant_id, 0):
            return
        self._heads[tenant_id] = position
        for watch in self._watches.get(tenant_id, ()):
            watch.wake()

    def wake_all(self) -> None:
        """Commits may have been missed: every open watch looks again."""
        for watches in self._watches.values():
            for watch in watches:
                watch.wake(stale=True)

    @asynccontextmanager
    async def watch(self, tenant_id: str, seconds: float | None) -> AsyncIterator[Watch]:
        watch = Watch(self, tenant_id, seconds)
        self._watches.setdefault(tenant_id, set()).add(watch)
        try:
            await self._entered(watch)
            yield watch
        finally:
            watches = self._watches[tenant_id]
            watches.discard(watch)
            if not watches:
                del self._watches[tenant_id]

    async def _entered(self, watch: Watch) -> None:
        """Hook: what a subclass does when a watch opens (start a poller, a listener)."""

    def watched(self) -> list[str]:
        return list(self._watches)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LocalFeed]:
        """The feed's lifetime (the background work of subclasses); nothing to run here."""
        yield self


@asynccontextmanager
async def background(_owner: object) -> AsyncIterator[TaskGroup]:
    """A task group for a feed's background work (cancelled when the block ends) that lets
    an exception of the block through as it is, not wrapped in an exception group: the
    feed wraps the server's whole life, and a refused start must read as itself."""
    try:
        async with anyio.create_task_group() as tasks:
            try:
                yield tasks
            finally:
                tasks.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


class PolledFeed(LocalFeed):
    """This process's commits at once, other processes' within `interval` seconds: a poller
    reads the watched tenants' heads while there are watches. For SQLite, whose writers
    share a file and nothing else."""

    def __init__(self, store: Store, interval: float = DEFAULT_POLL_SECONDS) -> None:
        super().__init__()
        self._store = store
        self._interval = interval
        self._tasks: TaskGroup | None = None
        self._polling = False
        self.polls = 0  # passes made (tests check the poller rests while nobody waits)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PolledFeed]:
        async with background(self) as tasks:
            self._tasks = tasks
            try:
                yield self
            finally:
                self._tasks = None

    async def _entered(self, watch: Watch) -> None:
        if self._polling:
            return
        if self._tasks is None:
            raise RuntimeError("a PolledFeed is used inside `async with feed.running()`")
        self._polling = True
        self._tasks.start_soon(self._poll)

    async def _poll(self) -> None:
        try:
            while self._watches:
                try:
                    await self.poll_once()
                except Exception:
                    log.exception("reading the log heads failed; the poller tries again")
                await anyio.sleep(self._interval)
        finally:
            self._polling = False

    async def poll_once(self) -> None:
        """Read the watched tenants' heads and wake whose log grew."""
        tenants = self.watched()
        if not tenants:
            return
        async with self._store.read() as tx:
            heads = {tenant: await tx.log.head(tenant) for tenant in tenants}
        self.polls += 1
        for tenant, position in heads.items():
            self.committed(tenant, position)
