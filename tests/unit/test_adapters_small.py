"""The small adapters: the system ULID source and the receiver LRU."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from adapters.memory.cache import ReceiverLru
from adapters.system import SystemClock, UlidSource
from core.domain.ids import is_ulid
from core.domain.model import Receiver
from core.domain.schemas import compile_schema


def test_system_ulids_are_valid_and_strictly_increasing_across_threads() -> None:
    source = UlidSource()
    made: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(source.new_id() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in made:
        assert out == sorted(out)
    everything = [u for out in made for u in out]
    assert len(set(everything)) == len(everything)
    assert all(is_ulid(u) for u in everything)


def test_the_system_clock_is_aware_utc() -> None:
    assert SystemClock().now().tzinfo is UTC


def receiver(rid: str, tenant: str = "T") -> Receiver:
    return Receiver(
        id=rid,
        tenant_id=tenant,
        name="n",
        type="t",
        version="1",
        description="",
        schema={},
        fingerprint="f",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_lru_keeps_the_most_recently_used_and_scopes_by_tenant() -> None:
    compiled = compile_schema({})
    lru = ReceiverLru(capacity=2)
    lru.put(receiver("a"), compiled)
    lru.put(receiver("b"), compiled)
    assert lru.get("T", "a") is not None  # a is now the most recent
    lru.put(receiver("c"), compiled)
    assert lru.get("T", "b") is None
    assert lru.get("T", "a") is not None
    assert lru.get("other", "a") is None
    assert len(lru) == 2


def test_the_lru_needs_room() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ReceiverLru(capacity=0)
