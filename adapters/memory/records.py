"""Idempotency-Key records in memory, shared by the memory store and the memory identity
stores (the composition root hands both the same `MemoryRecords`), as the SQL backends
share one table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core.domain.idempotency import Record, expired_before, in_use


class MemoryRecords:
    """Every tenant's records, by (scope, key); no capacity: only `purge` removes one."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], Record] = {}

    def get(self, scope: str, key: str) -> Record | None:
        return self._records.get((scope, key))

    def check(
        self,
        records: Sequence[Record],
        removed: Sequence[tuple[str, str]] = (),
        *,
        replace_expired: bool = False,
    ) -> None:
        """Raise `KeyInUse` when one of `records` would take a key that holds a record (not
        among `removed`; with `replace_expired`, as the identity stores do, not expired:
        a store's transaction removes an expired one itself, as on the SQL backends)."""
        seen: set[tuple[str, str]] = set()
        for record in records:
            key = (record.scope, record.key)
            if key in seen:
                raise in_use()
            seen.add(key)
            found = self._records.get(key)
            if found is None or key in removed:
                continue
            if not replace_expired or found.created_at > expired_before(record.created_at):
                raise in_use()

    def put(self, records: Sequence[Record], removed: Sequence[tuple[str, str]] = ()) -> None:
        for key in removed:
            self._records.pop(key, None)
        for record in records:
            self._records[(record.scope, record.key)] = record

    def purge(self, before: datetime, limit: int) -> int:
        doomed = [k for k, r in self._records.items() if r.created_at <= before][:limit]
        for key in doomed:
            del self._records[key]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._records)


class TxRecords:
    """A write transaction's records: staged, checked and stored when it commits."""

    __slots__ = ("_records", "removed", "staged")

    def __init__(self, records: MemoryRecords) -> None:
        self._records = records
        self.staged: list[Record] = []
        self.removed: list[tuple[str, str]] = []

    async def get(self, scope: str, key: str) -> Record | None:
        if (scope, key) in self.removed:
            return None
        return self._records.get(scope, key)

    def add(self, record: Record) -> None:
        self.staged.append(record)

    async def remove(self, scope: str, key: str) -> None:
        self.removed.append((scope, key))

    def check(self) -> None:
        self._records.check(self.staged, self.removed)

    def commit(self) -> None:
        self._records.put(self.staged, self.removed)


class ReadRecords:
    """The records as a read transaction sees them."""

    __slots__ = ("_records",)

    def __init__(self, records: MemoryRecords) -> None:
        self._records = records

    async def get(self, scope: str, key: str) -> Record | None:
        return self._records.get(scope, key)
