"""Retention: what is kept only for a while is deleted once its time is up."""

from __future__ import annotations

from typing import Final

from core.domain.idempotency import expired_before
from core.usecases.common import Deps

#: Records deleted per transaction: short transactions, never a long lock.
PURGE_BATCH: Final = 1000


class Retention:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def purge_idempotency(self, batch: int = PURGE_BATCH) -> int:
        """Delete every Idempotency-Key record past its retention (`RETENTION`), in batches of
        `batch`; how many. Live records are never touched, however many there are."""
        deps = self._deps
        before = expired_before(deps.clock.now())
        total = 0
        while True:
            deleted = await deps.store.purge_idempotency(before, batch)
            total += deleted
            if deleted < batch:
                return total
