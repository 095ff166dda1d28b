"""Watching SQL statements: slow ones logged, every one traced, each by its catalogue name.

A `StatementObserver` times each statement the store runs and, by the statement's
name in the catalogue (`queries.Statements`: `latest_event`, `events_page`,
`append`, ...; never its text, never a value):

- logs it on `waypost.sql` at WARNING when it took `slow_ms` or longer, and at DEBUG
  always (`log.levels = {"waypost.sql" = "DEBUG"}`);
- runs it inside a span when it was given a `span` factory (tracing; the factory comes
  from the entrypoints, so that this package imports no tracing library).

The store wraps its connections in `ObservedConnection` only when it has an observer,
so a store without one runs exactly as before. The identity store speaks SQLAlchemy
Core: `observe_engine` hooks the same observer onto its engine's cursor events, naming
a statement `identity.<verb>.<table>`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from adapters.sql.drivers import Connection, Row
from adapters.sql.queries import Copy, Page, Query

__all__ = ["SQL_LOGGER", "ObservedConnection", "SpanFactory", "StatementObserver", "observe_engine"]

SQL_LOGGER: Final = "waypost.sql"
log = logging.getLogger(SQL_LOGGER)

#: `span(name, attributes)`: a context manager around one statement (a tracing span).
SpanFactory = Callable[[str, dict[str, str]], AbstractContextManager[object]]


class StatementObserver:
    """What to do around each statement of one database (`system`: postgresql, sqlite)."""

    __slots__ = ("_attributes", "_slow", "span", "system")

    def __init__(self, *, system: str, slow_ms: float, span: SpanFactory | None = None) -> None:
        self.system = system
        self._slow = slow_ms / 1000 if slow_ms > 0 else float("inf")
        self.span = span
        self._attributes: dict[str, dict[str, str]] = {}

    @property
    def active(self) -> bool:
        """Whether watching could do anything (else the store need not wrap its connections)."""
        return self.span is not None or self._slow != float("inf") or log.isEnabledFor(10)

    def attributes(self, name: str) -> dict[str, str]:
        found = self._attributes.get(name)
        if found is None:
            # OpenTelemetry's database conventions; the summary is the catalogue's name.
            found = self._attributes[name] = {
                "db.system.name": self.system,
                "db.query.summary": name,
            }
        return found

    @contextmanager
    def statement(self, name: str) -> Iterator[None]:
        span = self.span(name, self.attributes(name)) if self.span is not None else nullcontext()
        start = time.perf_counter()
        try:
            with span:
                yield
        finally:
            self.done(name, time.perf_counter() - start)

    def done(self, name: str, seconds: float) -> None:
        if seconds >= self._slow:
            log.warning(
                "slow SQL statement %s: %.1f ms",
                name,
                seconds * 1000,
                extra={"statement": name, "duration_ms": round(seconds * 1000, 3)},
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "SQL statement %s: %.3f ms",
                name,
                seconds * 1000,
                extra={"statement": name, "duration_ms": round(seconds * 1000, 3)},
            )


class ObservedConnection:
    """A store connection whose every statement passes through a `StatementObserver`."""

    __slots__ = ("_inner", "_observer")

    def __init__(self, inner: Connection, observer: StatementObserver) -> None:
        self._inner = inner
        self._observer = observer

    @property
    def failed(self) -> bool:
        return self._inner.failed

    @failed.setter
    def failed(self, value: bool) -> None:
        self._inner.failed = value

    async def fetch(self, query: Query, args: Sequence[Any]) -> list[Row]:
        with self._observer.statement(query.name):
            return await self._inner.fetch(query, args)

    async def fetchrow(self, query: Query, args: Sequence[Any]) -> Row | None:
        with self._observer.statement(query.name):
            return await self._inner.fetchrow(query, args)

    async def execute(self, query: Query, args: Sequence[Any]) -> None:
        with self._observer.statement(query.name):
            await self._inner.execute(query, args)

    async def executemany(self, query: Query, rows: Sequence[Sequence[Any]]) -> None:
        with self._observer.statement(query.name):
            await self._inner.executemany(query, rows)

    async def copy(self, copy: Copy, rows: Sequence[Sequence[Any]]) -> None:
        with self._observer.statement(copy.name):
            await self._inner.copy(copy, rows)

    async def page(self, page: Page, values: dict[str, Any]) -> list[Row]:
        with self._observer.statement(page.name):
            return await self._inner.page(page, values)


_STARTED: Final = "waypost_observed"


def statement_name(context: Any, statement: str) -> str:
    """`identity.<verb>.<table>` of a SQLAlchemy Core statement (never its text)."""
    compiled = getattr(context, "compiled", None)
    stmt = getattr(compiled, "statement", None)
    verb = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else "statement"
    table = getattr(stmt, "table", None)
    if table is None and isinstance(stmt, sa.Select):
        froms = stmt.get_final_froms()
        table = froms[0] if froms else None
    name = getattr(table, "name", None)
    return f"identity.{verb}.{name}" if name else f"identity.{verb}"


def observe_engine(engine: Engine, observer: StatementObserver) -> None:
    """Hook `observer` onto every statement of a SQLAlchemy engine (the identity store's)."""

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, statement: str, *rest: Any) -> None:
        context = rest[1]  # (parameters, context, executemany)
        name = statement_name(context, statement)
        span = observer.span(name, observer.attributes(name)) if observer.span else None
        if span is not None:
            span.__enter__()
        conn.info.setdefault(_STARTED, []).append((name, time.perf_counter(), span))

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, *_: Any) -> None:
        _finish(conn)

    @sa.event.listens_for(engine, "handle_error")
    def _error(context: Any) -> None:
        conn = context.connection
        if conn is not None and conn.info.get(_STARTED):
            _finish(conn)

    def _finish(conn: Any) -> None:
        started = conn.info.get(_STARTED)
        if not started:
            return
        name, start, span = started.pop()
        if span is not None:
            span.__exit__(None, None, None)
        observer.done(name, time.perf_counter() - start)
