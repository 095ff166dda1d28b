"""Idempotency-Key: the same request sent again gets the first answer, whichever server it reaches.

A client that lost an answer (a timeout, a crash, a load balancer that gave up)
sends the request again with the same `Idempotency-Key`. The first request's
write and its *record* (the tenant's key space, the key, a fingerprint of the
request, the answer) commit in ONE transaction, so exactly one of two things is
true after any crash: both are stored, and a retry is answered with the stored
answer; or neither is, and a retry is a first request.

The rules (`decide`):
- no record for the key, or an expired one: the request runs; its record is
  stored with its write;
- a live record with the same fingerprint: its answer, again (`AlreadyAnswered`);
- a live record with another fingerprint: refused (`KeyReused`, a 422).

A request that is refused (4xx) or fails writes nothing, so it leaves no record:
sent again, it is decided again. Two requests with one key at the same moment:
the second waits for the first one's transaction (the tenant's writer lock, or
the record's unique key) and then replays its answer; `KeyInUse` (409) is left
for the rare case where the first one's record cannot be seen even then.

Keys live in a space per tenant (`""`: the platform's routes); a record lives
`RETENTION` after it was made and a retention task deletes it afterwards. There
is no cap on the number of records: no tenant's traffic can evict another's live key.

Pure: the time is an argument.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

import msgspec

from core.domain.errors import Conflict, FieldError, Invalid

__all__ = [
    "HEADER",
    "MAX_KEY_LENGTH",
    "RETENTION",
    "AlreadyAnswered",
    "Answer",
    "Claim",
    "KeyInUse",
    "KeyReused",
    "Record",
    "decide",
    "expired_before",
    "fingerprint",
    "in_use",
    "key_problem",
]

#: The name of the header (for error messages' `field`).
HEADER: Final = "Idempotency-Key"
MAX_KEY_LENGTH: Final = 255
#: How long a record answers retries.
RETENTION: Final = timedelta(hours=24)


class Claim(msgspec.Struct, frozen=True):
    """A request that carries a key: whose key space, the key, what the request was."""

    scope: str
    key: str
    fingerprint: str


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay sends: the status, the body and the headers that matter."""

    status: int
    body: bytes
    content_type: str = "application/json"
    location: str | None = None


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A stored answer to a claimed request."""

    scope: str
    key: str
    fingerprint: str
    answer: Answer
    created_at: datetime

    def expired(self, now: datetime) -> bool:
        return self.created_at <= expired_before(now)


class KeyReused(Invalid):
    """The key was used for another request (another body, route or query)."""

    title = "Idempotency key reused"


class KeyInUse(Conflict):
    """Another request with this key was written at the same moment and cannot be replayed yet."""

    title = "Request still running"


class AlreadyAnswered(Exception):
    """The request was answered before: send `answer` again. Not a refusal."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("answered before")
        self.answer = answer


def key_problem(key: str) -> str | None:
    """What is wrong with a key, or None when it is usable."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        return f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
    return None


def fingerprint(parts: Iterable[bytes]) -> str:
    """A digest of the request's parts (method, path, query, body): equal requests, equal
    fingerprints; any byte changed, another one."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def expired_before(now: datetime) -> datetime:
    """Records made at or before this moment no longer answer (and may be deleted)."""
    return now - RETENTION


def decide(found: Record | None, claim: Claim, now: datetime) -> Answer | None:
    """The stored answer to replay, or None when the request runs (no live record).

    Raises `KeyReused` when a live record holds another request under the key."""
    if found is None or found.expired(now):
        return None
    if found.fingerprint != claim.fingerprint:
        raise KeyReused(
            "This Idempotency-Key was used for another request.",
            [FieldError(HEADER, "was used with another request (method, path, query or body)")],
        )
    return found.answer


def in_use() -> KeyInUse:
    return KeyInUse(
        "Another request with this Idempotency-Key was written at the same moment.",
        [FieldError(HEADER, "is in use by another request; retry")],
    )
