"""A checksum of read-model content, computed the same way by every backend."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(order="sorted")


class Digest:
    """SHA-256 over named sections of rows; each row is hashed in its canonical JSON form."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def section(self, name: str, rows: Iterable[Any]) -> None:
        self._hash.update(b"\x00section:" + name.encode())
        for row in rows:
            self.add(row)

    def add(self, row: Any) -> None:
        self._hash.update(b"\x00" + _encoder.encode(row))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
