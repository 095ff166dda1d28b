"""Schema migrations (Alembic), run from the installed package: no alembic.ini needed.

`await migrate(url)` upgrades the database to the newest revision, in one
transaction (PostgreSQL: serialized between processes by an advisory lock, so
several servers starting at once migrate once). `await pending(url)` lists the
revisions not applied yet, oldest first: a production server that finds any
refuses to start. Migrations are the only way the schema changes; the test
suite checks that they build exactly `adapters.sql.tables.metadata`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from adapters.sql.availability import translate
from adapters.sql.engine import create_engine, normalize_url

__all__ = ["SCRIPT_LOCATION", "alembic_config", "migrate", "pending"]

SCRIPT_LOCATION = Path(__file__).resolve().parent
_MIGRATION_LOCK = 0x57617970  # "Wayp": pg_advisory_xact_lock key of the migrations


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for these scripts (and `url`, for Alembic's own commands)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _can_open(url: str) -> None:
    """SQLite: open the file with the plain driver first, so that a file that cannot be
    opened is `Unavailable` before any aiosqlite thread is started (one that fails to
    open may answer its event loop after the loop is gone)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database is None:
        return
    try:
        sqlite3.connect(parsed.database).close()
    except sqlite3.Error as exc:
        translate(url, exc)


async def migrate(url: str) -> None:
    """Upgrade the database at `url` to the head revision (`Unavailable` when it cannot be
    reached or opened)."""
    _can_open(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            await conn.run_sync(_upgrade)
    except Exception as exc:
        translate(url, exc)
    finally:
        await engine.dispose()


def _upgrade(connection: sa.Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def pending(url: str) -> list[str]:
    """The revisions not applied to the database at `url`, in the order they would run."""
    _can_open(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_heads()
            )
    except Exception as exc:
        translate(url, exc)
    finally:
        await engine.dispose()
    script = ScriptDirectory.from_config(alembic_config())
    applied: set[str] = set()
    for head in current:
        applied.update(rev.revision for rev in script.iterate_revisions(head, "base"))
    return [
        rev.revision
        for rev in reversed(list(script.walk_revisions()))
        if rev.revision not in applied
    ]
