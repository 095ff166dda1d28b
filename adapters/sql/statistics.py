"""Planner statistics refreshed when a store's writes cross a few thresholds.

PostgreSQL plans a prepared statement once it has run a few times and keeps that plan
until the table's statistics change; on a young database plans are made for tables that
held a handful of rows, and one of them can read a tenant's every row for each lookup
once there are thousands. Autovacuum's ANALYZE fixes it on its own schedule (a minute or
more); a few early ANALYZEs fix it at once. SQLite keeps no statistics until ANALYZE runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("waypost.database")

ANALYZE_AFTER = (1_000, 10_000, 100_000, 1_000_000)
"""Numbers of rows a store has written after which it refreshes the planner statistics."""


class Statistics:
    """Counts a store's written rows and runs `analyze` as they cross `ANALYZE_AFTER`.

    In the `background` (PostgreSQL: ANALYZE takes a connection of its own and blocks no
    writer), at most one at a time: the write that crossed a threshold, and the tenant's
    writes queued behind it, do not wait for it (at 100k log entries it took ~300 ms, the
    p99 of a soak's window). Otherwise (SQLite: ANALYZE needs the one writer anyway) the
    crossing write runs it. Statistics are an optimization: a failure is logged, never
    raised."""

    def __init__(self, analyze: Callable[[], Awaitable[object]], *, background: bool) -> None:
        self._analyze = analyze
        self._background = background
        self._written = 0
        self._thresholds = iter(ANALYZE_AFTER)
        self._next: int | None = next(self._thresholds)
        self._running: asyncio.Task[None] | None = None

    async def written(self, rows: int) -> None:
        """`rows` more were committed: refresh if that crossed a threshold."""
        if self._next is None:
            return
        self._written += rows
        if self._written < self._next:
            return
        while self._next is not None and self._written >= self._next:
            self._next = next(self._thresholds, None)
        if not self._background:
            await self._run()
        elif self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._analyze()
        except Exception as exc:  # an optimization: never a request's failure
            log.debug("refreshing the planner statistics failed: %s", exc)

    async def close(self) -> None:
        """Stop a refresh still running (the connections are about to close)."""
        running, self._running = self._running, None
        if running is not None and not running.done():
            running.cancel()
            await asyncio.wait([running])
