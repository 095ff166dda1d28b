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
checkpoints, safe against corruption), waits a bounded time for the writer lock
(`busy_timeout`, in aiosqlite's thread, never on the event loop), and enforces
foreign keys.

PostgreSQL URLs take the usual libpq options in their query string (`sslmode`,
`sslrootcert`, `sslcert`, `sslkey`, `application_name`, `connect_timeout`,
`options`), which asyncpg does not: `pg_connect_args` turns them into asyncpg's own
arguments (an `ssl` mode or context, `server_settings`, `timeout`). Any other option
is refused by name rather than passed on to fail later.
"""

from __future__ import annotations

import shlex
import ssl
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_SECONDS: Final = 10.0
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
#: Seconds to connect to PostgreSQL unless the URL says (`connect_timeout`): a server
#: that cannot be reached is a 503 after this long, not after asyncpg's 60 s.
PG_CONNECT_TIMEOUT: Final = 10.0
#: What the query string of a PostgreSQL URL may hold besides libpq's options: asyncpg's
#: own host/port (a Unix socket's directory, several hosts) and SQLAlchemy's cache size.
_PG_PASSTHROUGH: Final = frozenset({"host", "port", "prepared_statement_cache_size"})
_SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
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
    """The URL with its async driver: postgresql[+asyncpg]:// or sqlite[+aiosqlite]:///path.

    PostgreSQL's libpq options stay in the query string (see `split_pg_options`)."""
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


def create_engine(
    url: str | URL, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS, **options: Any
) -> AsyncEngine:
    """An async engine for the URL; SQLite gets the PRAGMAs and the explicit-BEGIN recipe
    (waiting at most `busy_timeout` seconds for a lock), PostgreSQL its libpq options as
    asyncpg arguments."""
    normalized = normalize_url(url)
    if normalized.get_backend_name() == "postgresql":
        normalized, connect_args = split_pg_options(normalized)
        options["connect_args"] = {**connect_args, **options.get("connect_args", {})}
    engine = create_async_engine(normalized, **options)
    if engine.dialect.name == "sqlite":
        _tame_sqlite(engine, busy_timeout)
    return engine


def split_pg_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """The URL without its libpq options, and asyncpg's arguments for them."""
    libpq = {k: v for k, v in url.query.items() if k not in _PG_PASSTHROUGH}
    kept = {k: v for k, v in url.query.items() if k in _PG_PASSTHROUGH}
    return url.set(query=kept), pg_connect_args(libpq)


def _single(name: str, value: str | tuple[str, ...]) -> str:
    if isinstance(value, tuple):
        raise UnsupportedDatabase(f"database.url: the option {name} is given more than once")
    return value


def pg_connect_args(query: Mapping[str, str | tuple[str, ...]]) -> dict[str, Any]:
    """asyncpg's `connect` arguments for libpq's URL options (`sslmode`, `sslrootcert`,
    `sslcert`, `sslkey`, `application_name`, `connect_timeout`, `options`)."""
    given = {name: _single(name, value) for name, value in query.items()}
    unknown = sorted(set(given) - {"sslmode", "sslrootcert", "sslcert", "sslkey",
                                   "application_name", "connect_timeout", "options"})  # fmt: skip
    if unknown:
        raise UnsupportedDatabase(
            f"database.url: unsupported option(s) {', '.join(unknown)} (understood: sslmode, "
            "sslrootcert, sslcert, sslkey, application_name, connect_timeout, options)"
        )
    args: dict[str, Any] = {"timeout": PG_CONNECT_TIMEOUT}
    server_settings: dict[str, str] = {}
    if "connect_timeout" in given:
        args["timeout"] = _timeout(given["connect_timeout"])
    if "application_name" in given:
        server_settings["application_name"] = given["application_name"]
    if "options" in given:
        server_settings.update(_server_options(given["options"]))
    if server_settings:
        args["server_settings"] = server_settings
    ssl_arg = _ssl(given)
    if ssl_arg is not None:
        args["ssl"] = ssl_arg
    return args


#: libpq's connect_timeout=0 ("wait forever"), as asyncpg needs a number: a day.
_FOREVER: Final = 86_400.0


def _timeout(text: str) -> float:
    """libpq's connect_timeout: whole seconds; 0 waits forever; under 2 means 2."""
    try:
        seconds = int(text)
    except ValueError:
        raise UnsupportedDatabase(
            f"database.url: connect_timeout must be a whole number of seconds, not {text!r}"
        ) from None
    if seconds < 0:
        raise UnsupportedDatabase("database.url: connect_timeout must not be negative")
    return _FOREVER if seconds == 0 else float(max(seconds, 2))


def _server_options(text: str) -> dict[str, str]:
    """libpq's `options`: `-c name=value` (or `--name=value`) settings sent at connect."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UnsupportedDatabase(f"database.url: options: {exc}") from None
    found: dict[str, str] = {}
    pending_c = False
    for word in words:
        if pending_c:
            setting, pending_c = word, False
        elif word == "-c":
            pending_c = True
            continue
        elif word.startswith("-c") or word.startswith("--"):
            setting = word[2:]
        else:
            raise UnsupportedDatabase(
                f"database.url: options: {word!r} is not -c name=value or --name=value"
            )
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise UnsupportedDatabase(f"database.url: options: {setting!r} is not name=value")
        found[name.replace("-", "_")] = value
    if pending_c:
        raise UnsupportedDatabase("database.url: options: -c needs name=value")
    return found


def _ssl(given: Mapping[str, str]) -> ssl.SSLContext | str | bool | None:
    """asyncpg's `ssl` for libpq's sslmode and certificate files: asyncpg's own mode
    names when no file is named, else a context that checks what the mode says."""
    mode = given.get("sslmode")
    if mode is not None and mode not in _SSLMODES:
        raise UnsupportedDatabase(
            f"database.url: sslmode must be one of {', '.join(_SSLMODES)}, not {mode!r}"
        )
    files = {k: given[k] for k in ("sslrootcert", "sslcert", "sslkey") if k in given}
    if mode == "disable":
        return False
    if not files:
        return mode
    if mode in (None, "allow", "prefer"):
        raise UnsupportedDatabase(
            "database.url: certificate files need sslmode=require, verify-ca or verify-full"
        )
    root = files.get("sslrootcert")
    try:
        if root is not None and root != "system":
            context = ssl.create_default_context(cafile=root)
        else:
            context = ssl.create_default_context()
        # libpq: `require` with a root certificate verifies the chain, like verify-ca.
        context.check_hostname = mode == "verify-full"
        if mode == "require" and root is None:
            context.verify_mode = ssl.CERT_NONE
        if "sslcert" in files:
            context.load_cert_chain(files["sslcert"], files.get("sslkey"))
        elif "sslkey" in files:
            raise UnsupportedDatabase("database.url: sslkey needs sslcert")
    except (OSError, ssl.SSLError) as exc:
        raise UnsupportedDatabase(f"database.url: cannot load the SSL files: {exc}") from None
    return context


def _tame_sqlite(engine: AsyncEngine, busy_timeout: float) -> None:
    pragmas = (*SQLITE_PRAGMAS, f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # None: the driver never emits BEGIN (or COMMIT on its own); we do.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        statement = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "BEGIN")
        connection.exec_driver_sql(statement)
