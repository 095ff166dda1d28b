"""Keyset pagination over the ports' `PageRequest`, with opaque cursors.

A cursor is base64url of a small JSON array `[list, order, last id]` followed by
a short checksum. It is opaque to callers, not secret: the checksum only makes
a garbled or hand-edited cursor a clean 400 instead of a silent jump, and a
cursor is refused on another list or with another order than the one that made
it. Pages are fetched one item long, so the last page has no cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal, Protocol, TypeVar

import msgspec
from litestar.params import QueryParameter

from core.domain.errors import FieldError
from core.domain.ids import is_ulid
from core.ports import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Order, PageRequest
from entrypoints.http.problems import BadRequest
from entrypoints.http.views import Page


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)
V = TypeVar("V")
P = TypeVar("P", bound=Page[Any])

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "Cursor",
    "Limit",
    "OrderParam",
    "decode_cursor",
    "encode_cursor",
    "page_of",
    "page_request",
]

Limit = Annotated[
    int,
    QueryParameter(ge=1, le=MAX_PAGE_SIZE, description=f"Page size, 1 to {MAX_PAGE_SIZE}."),
]
Cursor = Annotated[
    str | None,
    QueryParameter(description="`next_cursor` of the previous page, as it was given."),
]
OrderParam = Annotated[
    Literal["asc", "desc"],
    QueryParameter(description="`desc` (newest first, the default) or `asc`."),
]

_CHECK_BYTES: Final = 6
_KEY: Final = b"waypost cursor v1"
_decoder: Final = msgspec.json.Decoder(tuple[str, str, str])


def _check(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=_CHECK_BYTES, key=_KEY).digest()


def encode_cursor(kind: str, order: Order, last_id: str) -> str:
    raw = msgspec.json.encode((kind, order, last_id))
    return base64.urlsafe_b64encode(raw + _check(raw)).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, order: Order, cursor: str) -> str:
    """The last id a cursor names; 400 when it is garbled, or from another list or order."""
    try:
        blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise _bad("is not a cursor this API made") from None
    raw, check = blob[:-_CHECK_BYTES], blob[-_CHECK_BYTES:]
    if len(blob) <= _CHECK_BYTES or _check(raw) != check:
        raise _bad("is not a cursor this API made")
    try:
        made_for, made_order, last_id = _decoder.decode(raw)
    except msgspec.DecodeError:  # pragma: no cover - a checked cursor is one we encoded
        raise _bad("is not a cursor this API made") from None
    if made_for != kind:
        raise _bad("belongs to another list")
    if made_order != order:
        raise _bad(f"was made for order={made_order}; pass the same order to continue")
    if not is_ulid(last_id):  # pragma: no cover - a checked cursor is one we encoded
        raise _bad("is not a cursor this API made")
    return last_id


def _bad(message: str) -> BadRequest:
    return BadRequest("The cursor cannot be used here.", [FieldError("cursor", message)])


def page_request(kind: str, limit: int, cursor: str | None, order: Order) -> PageRequest:
    """The store's page for one more item than asked: that item tells whether more follow."""
    after = None if cursor is None else decode_cursor(kind, order, cursor)
    return PageRequest(limit=limit + 1, after=after, order=order)


def page_of(
    kind: str,
    items: Sequence[T],
    *,
    limit: int,
    order: Order,
    view: Callable[[T], V],
    page: Callable[[list[V], str | None], P],
) -> P:
    """The first `limit` items as a page; a cursor after the last one if there were more."""
    if len(items) > limit:
        items = items[:limit]
        next_cursor: str | None = encode_cursor(kind, order, items[-1].id)
    else:
        next_cursor = None
    return page([view(item) for item in items], next_cursor)
