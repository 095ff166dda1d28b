"""The migrations build exactly the declared schema (adapters/sql/tables.py), on both backends."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from adapters.sql import identity_tables
from adapters.sql.engine import create_engine
from adapters.sql.migrations import alembic_config, migrate, pending
from adapters.sql.tables import metadata

pytestmark = pytest.mark.anyio

REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006"]
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'waypost.db'}"
    fresh: str = request.getfixturevalue("fresh_database")
    return fresh


async def _schema_diffs(url: str, declared: sa.MetaData = metadata) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync: sa.Connection) -> list[Any]:
                context = MigrationContext.configure(sync, opts={"compare_type": True})
                diffs: list[Any] = compare_metadata(context, declared)
                return diffs

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
            return set(names)
    finally:
        await engine.dispose()


async def test_migrations_build_the_declared_schema(url: str) -> None:
    assert await pending(url) == REVISIONS
    await migrate(url)
    assert await pending(url) == []
    assert await _schema_diffs(url) == []
    assert await _tables(url) == set(metadata.tables) | {"alembic_version"}


async def test_migrate_twice_changes_nothing(url: str) -> None:
    await migrate(url)
    await migrate(url)
    assert await pending(url) == []
    assert await _schema_diffs(url) == []


async def test_downgrade_to_base_removes_every_table(url: str) -> None:
    await migrate(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:

            def downgrade(sync: sa.Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = sync
                command.downgrade(config, "base")

            await conn.run_sync(downgrade)
    finally:
        await engine.dispose()
    assert await _tables(url) == {"alembic_version"}
    assert await pending(url) == REVISIONS


def test_the_identity_tables_are_declared_on_the_one_metadata() -> None:
    assert {t.name for t in identity_tables.TABLES} <= set(metadata.tables)


async def test_an_unmigrated_database_differs_from_the_declared_schema(url: str) -> None:
    """The comparison is not vacuous: an empty database shows every table missing."""
    diffs = await _schema_diffs(url)
    assert {d[1].name for d in diffs if d[0] == "add_table"} == set(metadata.tables)


async def test_the_comparison_sees_a_drifted_index_type_and_constraint(url: str) -> None:
    """The comparison has teeth: an index, a type or a unique constraint that differ show."""
    await migrate(url)
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    events = drifted.tables["events"]
    sa.Index("ix_events_success", events.c.tenant_id, events.c.success)
    drifted.tables["log"].c.data.type = sa.Integer()
    receivers = drifted.tables["receivers"]
    [triple] = [c for c in receivers.constraints if isinstance(c, sa.UniqueConstraint)]
    receivers.constraints.discard(triple)
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in await _schema_diffs(url, drifted)}
    assert {"add_index", "modify_type", "remove_constraint"} <= kinds


def test_the_delivery_tables_are_declared_on_the_one_metadata() -> None:
    from adapters.sql import delivery_tables

    assert {t.name for t in delivery_tables.TABLES} <= set(metadata.tables)
