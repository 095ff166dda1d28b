"""The real clock, a monotonic ULID source, and randomness."""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from datetime import UTC, datetime

from core.domain.ids import UlidState, needs_randomness, next_ulid, next_ulids


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class UlidSource:
    """ULIDs from the wall clock and os.urandom, strictly increasing within this process."""

    def __init__(self) -> None:
        self._last: UlidState | None = None
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            # Within a millisecond the previous id steps on: no random bits are drawn.
            fresh = int.from_bytes(os.urandom(10)) if needs_randomness(self._last, now_ms) else 0
            ulid, self._last = next_ulid(self._last, now_ms, fresh)
            return ulid

    def new_ids(self, count: int) -> list[str]:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            fresh = int.from_bytes(os.urandom(10)) if needs_randomness(self._last, now_ms) else 0
            made, last = next_ulids(self._last, now_ms, fresh, count)
            if last is not None:
                self._last = last
            return made


class SystemRandomness:
    """Jitter from `random` (need not be unpredictable); secret bytes from `secrets`."""

    def __init__(self) -> None:
        self._random = random.Random()  # noqa: S311 - jitter, not a secret

    def random(self) -> float:
        return self._random.random()

    def token_bytes(self, count: int) -> bytes:
        return secrets.token_bytes(count)
