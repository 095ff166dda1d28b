"""Async engines for the two backends: URLs normalized to the async drivers, SQLite tamed.

Who uses them: the migrations (both backends), the identity stores, and a PostgreSQL
`SqlStore`, whose engine (in AUTOCOMMIT mode) is the pool it draws asyncpg connections
from. A SQLite `SqlStore` uses no engine: it speaks sqlite3 directly (`drivers`).

SQLite: the sqlite3 driver's own transaction handling (its "legacy" mode, which
skips BEGIN before SELECT and DDL) is switched off and SQLAlchemy emits BEGIN
itself: the documented "serializable isolation / savepoints / transactional
DDL" recipe. A connection whose execution options carry `sqlite_begin` begins
with that statement instead, which is how write transactions take SQLite's one
writer lock up front with `BEGIN IMMEDIATE` (a deferred BEGIN that later writes
can fail with SQLITE_BUSY instead of waiting). Every connection runs in WAL
mode (readers never block the writer), synchronous=NORMAL (durable at
checkpoints, safe against corruption), waits up to 30 s for the writer lock
(in aiosqlite's thread, never on the event loop), and enforces foreign keys.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
)
SQLITE_BEGIN_OPTION = "sqlite_begin"
"""Execution option naming the statement that begins a SQLite transaction."""

_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


class UnsupportedDatabase(ValueError):
    """A URL naming a database or driver the SQL store does not speak."""


def normalize_url(url: str | URL) -> URL:
    """The URL with its async driver: postgresql[+asyncpg]:// or sqlite[+aiosqlite]:///path."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise UnsupportedDatabase(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use postgresql://, postgresql+asyncpg://, sqlite:///path or sqlite+aiosqlite:///path"
        )
    if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise UnsupportedDatabase(
            "an in-memory SQLite database cannot be shared between connections: "
            "give a file path (sqlite:///path/to/waypost.db)"
        )
    return parsed.set(drivername=driver)


def create_engine(url: str | URL, **options: Any) -> AsyncEngine:
    """An async engine for the URL; SQLite gets the PRAGMAs and the explicit-BEGIN recipe."""
    normalized = normalize_url(url)
    engine = create_async_engine(normalized, **options)
    if engine.dialect.name == "sqlite":
        _tame_sqlite(engine)
    return engine


def _tame_sqlite(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # None: the driver never emits BEGIN (or COMMIT on its own); we do.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        statement = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "BEGIN")
        connection.exec_driver_sql(statement)
