"""Which failures mean "the database cannot serve" (503), and one log line per outage."""

from __future__ import annotations

import logging
import sqlite3

import asyncpg
import pytest
import sqlalchemy.exc

from adapters.sql.availability import Availability, cause_of, describe_database
from adapters.sql.drivers import DatabaseBusy
from core.ports import Unavailable


def _sqlite_error(code: int, text: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(text)
    error.sqlite_errorcode = code
    error.sqlite_errorname = "SQLITE_X"
    return error


def _wrapped(inner: BaseException) -> sqlalchemy.exc.DBAPIError:
    """As SQLAlchemy's asyncpg adapter raises it: its own error, raised from asyncpg's."""
    adapter_error = Exception(str(inner))
    adapter_error.__cause__ = inner
    wrapped = sqlalchemy.exc.DBAPIError("SELECT 1", None, adapter_error)
    wrapped.__cause__ = adapter_error
    return wrapped


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
        asyncpg.exceptions.InvalidPasswordError("password authentication failed"),
        _wrapped(asyncpg.exceptions.CannotConnectNowError("starting up")),
        _wrapped(ConnectionRefusedError(111, "Connection refused")),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        DatabaseBusy("locked for 10 s"),
        _sqlite_error(sqlite3.SQLITE_BUSY, "database is locked"),
        _sqlite_error(sqlite3.SQLITE_CANTOPEN, "unable to open database file"),
        _sqlite_error(sqlite3.SQLITE_IOERR | (1 << 8), "disk I/O error"),
        _sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"),
    ],
)
def test_unavailable(exc: BaseException) -> None:
    assert cause_of(exc) is not None


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedTableError("no such table"),
        _sqlite_error(sqlite3.SQLITE_ERROR, "no such table: x"),
        sqlite3.IntegrityError("UNIQUE constraint failed"),
        _wrapped(asyncpg.exceptions.UndefinedColumnError("no such column")),
    ],
)
def test_other_failures_are_not_unavailability(exc: BaseException) -> None:
    assert cause_of(exc) is None


def test_databases_are_named_without_their_password() -> None:
    assert describe_database("postgresql://u:secret@db.example:6432/waypost?sslmode=require") == (
        "the PostgreSQL database waypost at db.example:6432"
    )
    assert describe_database("sqlite:////var/lib/waypost/w.db") == (
        "the SQLite database /var/lib/waypost/w.db"
    )


def fail(availability: Availability, exc: Exception) -> None:
    try:
        raise exc
    except Exception as caught:
        availability.raise_for(caught)


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    availability = Availability("postgresql://u:secret@db.example/waypost")
    refused = ConnectionRefusedError(111, "Connection refused")
    with caplog.at_level(logging.INFO, logger="waypost.database"):
        for _ in range(50):
            with pytest.raises(Unavailable) as raised:
                fail(availability, refused)
            assert "Connection refused" in raised.value.cause
        availability.ok()
        availability.ok()
        with pytest.raises(ValueError, match="a bug"):
            fail(availability, ValueError("a bug"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "is unavailable: ConnectionRefusedError" in lines[0]
    assert "serves again after" in lines[1]
    assert "secret" not in "".join(lines)
    assert availability.outages == 1
