"""A PostgreSQL store with a streaming read replica for reads that may be a little stale.

`ReplicaStore` is the Store port over two `SqlStore`s: the primary, which serves every
write, every `read()` (what decides: gates, idempotency, authentication, the write path,
group status) and every rebuild; and the replica (`database.read_url`), which serves
`read_stale(tenant_id)`: lists, gets and message pages. A stale read goes to the primary
instead when

- read-your-writes would not hold: this process committed a write of the tenant whose
  log position the replica's snapshot has not reached yet. The check costs one primary-key
  read on the replica (the tenant's head, in the same snapshot as the read), and only for
  tenants this process wrote to in the last `RYW_WINDOW` (the replica has replayed them
  by then, or lags beyond `max_lag` and is skipped anyway);
- the replica lags more than `max_lag`: measured at most every `LAG_EVERY` seconds as
  `now() - pg_last_xact_replay_timestamp()` unless it has replayed all it received (an
  idle primary makes no transactions: the replay time ages without any lag);
- the replica cannot be reached: it is then left alone for `RETRY_SECONDS` (readiness
  says "degraded"), and tried again.

The replica's failures never reach the caller, but one: a read the replica had begun to
serve when it went away raises `Unavailable` (a 503; the next read goes to the primary).
Its connections have an `Availability` of their own that logs nothing (this store logs
the replica's outage once). The primary's failures are the primary's: while it cannot
serve, writes, `read()` and the stale reads that fall back to it raise `Unavailable`
(`adapters.sql.availability`); stale reads the replica takes go on from it.

Read-your-writes across processes (a client whose `POST` reached one server and whose
`GET` reaches another) is bounded by `max_lag` rather than guaranteed: route a client's
requests to one process, or keep `max_lag` small.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from datetime import datetime
from typing import Any, Final

import anyio
import asyncpg

from adapters.sql.availability import Availability
from adapters.sql.store import SqlStore, _Rebuild, _WriteTx
from adapters.sql.store_reads import _ReadTx
from core.ports import Unavailable

__all__ = ["ReplicaStore"]

log = logging.getLogger("waypost.sql")

#: How long a replica that failed is left alone before it is tried again.
RETRY_SECONDS: Final = 5.0
#: How often the replica's lag is measured (a query on the replica).
LAG_EVERY: Final = 1.0
#: How long a tenant this process wrote to is checked for read-your-writes.
RYW_WINDOW: Final = 60.0
#: Tenants remembered for read-your-writes at most.
RYW_CAPACITY: Final = 100_000
_FAILURES = (Unavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class _Behind(Exception):
    """The replica's snapshot is older than what the caller must see."""


class ReplicaStore:
    """The Store port over a primary `SqlStore` and a replica reached at `replica_url`."""

    def __init__(
        self,
        primary: SqlStore,
        replica_url: str,
        *,
        max_lag: float,
        pool_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[str], Any] | None = None,
    ) -> None:
        self.primary = primary
        self._url = replica_url
        self._max_lag = max_lag
        self._pool_size = pool_size
        self._clock = clock
        self._connect = connect if connect is not None else self._connect_replica
        self._replica: SqlStore | None = None
        self._down_until = 0.0
        self._problem: str | None = None
        self._lag: float | None = None
        self._lag_at = float("-inf")
        self._written: dict[str, tuple[int, float]] = {}
        self._opening = anyio.Lock()
        #: Reads served by the replica and by the primary instead (for tests and metrics).
        self.served = {"replica": 0, "primary": 0}

    # --- the Store port --------------------------------------------------------------------

    def read(self) -> AbstractAsyncContextManager[_ReadTx]:
        return self.primary.read()

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[_WriteTx]:
        async with self.primary.write(tenant_id) as tx:
            yield tx
        if tx.head is not None:  # committed: remember it for read-your-writes
            self._written[tenant_id] = (tx.head, self._clock())
            if len(self._written) > RYW_CAPACITY:
                oldest = min(self._written, key=lambda t: self._written[t][1])
                del self._written[oldest]

    def rebuild(
        self, tenant_id: str | None = None, after: int = 0
    ) -> AbstractAsyncContextManager[_Rebuild]:
        return self.primary.rebuild(tenant_id, after)

    async def replay_done(self, run: str) -> set[str]:
        return await self.primary.replay_done(run)

    async def replay_finished(self, run: str) -> None:
        await self.primary.replay_finished(run)

    async def purge_idempotency(self, before: datetime, limit: int) -> int:
        return await self.primary.purge_idempotency(before, limit)

    @asynccontextmanager
    async def read_stale(self, tenant_id: str) -> AsyncIterator[_ReadTx]:
        on_replica = False
        try:
            async with AsyncExitStack() as stack:
                tx = await self._replica_tx(stack, tenant_id)
                if tx is None:
                    self.served["primary"] += 1
                    tx = await stack.enter_async_context(self.primary.read())
                else:
                    self.served["replica"] += 1
                    on_replica = True
                yield tx
        except Unavailable as exc:
            if on_replica:  # it went away under this read: the next ones go to the primary
                await self._went_away(exc)
            raise

    async def close(self) -> None:
        if self._replica is not None:
            await self._replica.close()
        await self.primary.close()

    # --- the replica -----------------------------------------------------------------------

    async def _replica_tx(self, stack: AsyncExitStack, tenant_id: str) -> _ReadTx | None:
        """A read transaction on the replica fit for this read, or None (use the primary)."""
        now = self._clock()
        if now < self._down_until:
            return None
        needed = self._written.get(tenant_id)
        if needed is not None and now - needed[1] > RYW_WINDOW:
            del self._written[tenant_id]
            needed = None
        inner = AsyncExitStack()
        try:
            replica = await self._open()
            with anyio.fail_after(RETRY_SECONDS):
                tx = await inner.enter_async_context(replica.read())
            if now - self._lag_at >= LAG_EVERY:
                self._lag = await tx.replica_lag()
                self._lag_at = now
            if self._lag is not None and self._lag > self._max_lag:
                raise _Behind
            if needed is not None and await tx.log.head(tenant_id) < needed[0]:
                raise _Behind
        except _Behind:
            await inner.aclose()
            return None
        except _FAILURES as exc:
            await inner.aclose()
            await self._went_away(exc)
            return None
        stack.push_async_exit(inner)
        self._problem = None
        return tx

    async def _connect_replica(self, url: str) -> SqlStore:
        # Its own outages are this store's to report (`_went_away`): they answer no 503.
        quiet = Availability(url, log_outages=False)
        if self._pool_size is None:
            return await SqlStore.connect(url, availability=quiet)
        return await SqlStore.connect(url, availability=quiet, pool_size=self._pool_size)

    async def _open(self) -> SqlStore:
        if self._replica is None:
            async with self._opening:
                if self._replica is None:
                    with anyio.fail_after(RETRY_SECONDS):
                        self._replica = await self._connect(self._url)
        return self._replica

    async def _went_away(self, exc: BaseException) -> None:
        why = exc.cause if isinstance(exc, Unavailable) else type(exc).__name__
        if self._problem is None:
            log.warning("the read replica cannot be reached (%s); reads go to the primary", why)
        self._problem = f"unreachable ({why}): reads go to the primary"
        self._down_until = self._clock() + RETRY_SECONDS
        replica, self._replica = self._replica, None
        if replica is not None:
            with anyio.CancelScope(shield=True), suppress(Exception):  # thrown away
                await replica.close()

    def readiness(self) -> tuple[str, str]:
        """(`ok` or `degraded`, detail) of the replica, for the readiness probe."""
        if self._problem is not None:
            return "degraded", self._problem
        if self._lag is not None and self._lag > self._max_lag:
            return "degraded", f"{self._lag:.1f} s behind: reads go to the primary"
        return "ok", "a streaming replica serves stale-tolerant reads"
