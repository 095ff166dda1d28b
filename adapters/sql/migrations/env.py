"""Alembic's environment for the SQL store.

`adapters.sql.migrations.migrate` runs it with an open connection (in
`config.attributes["connection"]`), inside a transaction it commits itself:
the whole upgrade is one transaction on PostgreSQL and, thanks to the
explicit-BEGIN recipe of `adapters.sql.engine`, on SQLite too. Run from the
`alembic` command line instead, it connects to `sqlalchemy.url` with the same
engine factory; with `--sql` it prints the SQL (offline mode).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from adapters.sql.engine import create_engine, normalize_url
from adapters.sql.tables import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying tables
        compare_type=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    if context.is_offline_mode():
        context.configure(url=normalize_url(url), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url))


_main()
