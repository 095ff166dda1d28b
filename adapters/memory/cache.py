"""A bounded in-process LRU of receivers and their compiled schemas."""

from __future__ import annotations

from collections import OrderedDict

from core.domain.model import Receiver
from core.domain.schemas import CompiledSchema

DEFAULT_CAPACITY = 10_000


class ReceiverLru:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: OrderedDict[tuple[str, str], tuple[Receiver, CompiledSchema]] = OrderedDict()

    def get(self, tenant_id: str, receiver_id: str) -> tuple[Receiver, CompiledSchema] | None:
        key = (tenant_id, receiver_id)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, receiver: Receiver, compiled: CompiledSchema) -> None:
        key = (receiver.tenant_id, receiver.id)
        self._items[key] = (receiver, compiled)
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
