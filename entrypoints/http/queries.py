"""Query strings: no parameter, known or not, may hold the NUL character.

PostgreSQL refuses NUL in text even to compare with it, SQLite compares it: without
this, a filter such as `?name=%00` would be a 500 on one backend and an empty list on
the other. Refused once for every route here (422, naming the parameter), before
anything reads the query.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from core.domain.errors import FieldError, Invalid
from core.domain.fields import NUL, NUL_MESSAGE

__all__ = ["QueryTextMiddleware"]

_ENCODED_NUL: Final = b"%00"


class QueryTextMiddleware:
    """422 for a query parameter (its name or value) that holds NUL (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            query: bytes = scope["query_string"]
            if _ENCODED_NUL in query or b"\x00" in query:
                pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                names = sorted({n for n, v in pairs if NUL in n or NUL in v}) or ["?"]
                raise Invalid(
                    "A query parameter holds the NUL character.",
                    [FieldError(name.replace(NUL, "\\u0000"), NUL_MESSAGE) for name in names],
                )
        await self.app(scope, receive, send)
