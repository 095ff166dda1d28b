"""When the database cannot serve: one exception for the callers, one log line per outage.

`cause_of(exc)` tells a failure that means "the database cannot serve now" (down,
unreachable, restarting, refusing connections, out of connections, a SQLite lock held
too long by another process, a file that cannot be opened) from every other failure (a
bug, a constraint): only those become `core.ports.Unavailable`, which the HTTP layer
answers with 503 and `Retry-After`, and the command line with one line.

An `Availability` is shared by every store on one database in a process (the
composition root hands the same one to each): the first failure of an outage is
logged once, with its cause, and the first success after it says how long it lasted.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import NoReturn

import asyncpg
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from adapters.sql.drivers import DatabaseBusy
from core.ports import Unavailable

__all__ = ["Availability", "cause_of", "describe_database", "translate"]

log = logging.getLogger("waypost.database")

_PG_UNAVAILABLE = (
    asyncpg.exceptions.PostgresConnectionError,  # 08: the connection failed or is gone
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutting down, starting, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28: the login is refused
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: no such database
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a standby (mid failover)
)
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)


def cause_of(exc: BaseException) -> str | None:
    """Why the database could not serve, if that is what `exc` says (or the error it was
    raised from: SQLAlchemy's adapters wrap the driver's); else None."""
    for _ in range(_CHAIN):
        found = _cause(exc)
        if found is not None or exc.__cause__ is None:
            return found
        exc = exc.__cause__
    return None


_CHAIN = 5


def _cause(exc: BaseException) -> str | None:
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        return _wrapped(exc)
    if isinstance(exc, DatabaseBusy):
        return str(exc)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in _SQLITE_UNAVAILABLE:
            return None
        return f"{exc} ({getattr(exc, 'sqlite_errorname', code)})"
    return _connection(exc)


def _wrapped(exc: sqlalchemy.exc.SQLAlchemyError) -> str | None:
    """SQLAlchemy's wrapper of a driver's error: the driver's error says."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # the pool had no connection in time
        return f"no connection in time ({exc})"
    orig = getattr(exc, "orig", None) or exc.__cause__
    found = None if orig is None or orig is exc else cause_of(orig)
    if found is None and getattr(exc, "connection_invalidated", False):
        return f"the connection was lost ({type(exc).__name__})"
    return found


def _connection(exc: BaseException) -> str | None:
    """PostgreSQL's and the network's failures to connect or to stay connected."""
    if isinstance(exc, _PG_UNAVAILABLE):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and "closed" in str(exc):
        return f"the connection was closed ({exc})"
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return f"the connection failed in the middle of a statement ({exc})"
    if isinstance(exc, TimeoutError):
        return "timed out connecting"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def describe_database(url: str) -> str:
    """The database as an operator names it: host, port and name, or the SQLite file; never
    the password."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return "the database (database.url)"
    if parsed.get_backend_name() == "sqlite":
        return f"the SQLite database {parsed.database}"
    host = parsed.host or "localhost"
    port = parsed.port or 5432
    return f"the PostgreSQL database {parsed.database or ''} at {host}:{port}"


def translate(url: str, exc: BaseException) -> NoReturn:
    """Raise `Unavailable` (not logged) when `exc` says the database at `url` cannot serve,
    else `exc`: for one-shot work (migrations), whose caller reports it."""
    cause = cause_of(exc)
    if cause is None:
        raise exc
    raise Unavailable(describe_database(url), cause) from exc


class Availability:
    """Whether one database serves, as this process sees it; logs each outage once."""

    def __init__(self, url: str, *, log_outages: bool = True) -> None:
        self.what = describe_database(url)
        self.down_since: float | None = None
        self.outages = 0
        #: False: the caller reports outages itself (a read replica, which has a fallback).
        self.log_outages = log_outages

    def raise_for(self, exc: BaseException) -> NoReturn:
        """Raise `Unavailable` (from `exc`) when `exc` says the database cannot serve, else
        `exc` itself. Call it in an `except` block."""
        failed = self.failed(exc)
        if failed is None:
            raise exc
        raise failed from exc

    def failed(self, exc: BaseException) -> Unavailable | None:
        """`Unavailable` when `exc` says the database cannot serve (logged when an outage
        begins), else None."""
        cause = cause_of(exc)
        if cause is None:
            return None
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.outages += 1
            if not self.log_outages:
                return Unavailable(self.what, cause)
            log.warning(
                "%s is unavailable: %s; requests are answered 503 until it serves again",
                self.what,
                cause,
                extra={"database": self.what, "cause": cause},
            )
        return Unavailable(self.what, cause)

    def ok(self) -> None:
        """A transaction worked: an outage, if there was one, is over."""
        if self.down_since is not None:
            lasted = time.monotonic() - self.down_since
            self.down_since = None
            if not self.log_outages:
                return
            log.info(
                "%s serves again after %.1f s",
                self.what,
                lasted,
                extra={"database": self.what, "outage_seconds": round(lasted, 3)},
            )
