"""Smoke tests for the session servers of ``tests.servers``, and its skip-or-fail decision."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.servers import (
    REQUIRE_SERVICES_ENV,
    PostgresServer,
    missing_binaries,
    service_verdict,
    services_required,
)

# --------------------------------------------------------------------------- no server needed


def test_nothing_missing_means_start() -> None:
    verdict = service_verdict("Redis", [], "install it", {REQUIRE_SERVICES_ENV: "1"})
    assert verdict.action == "start"


@pytest.mark.parametrize("value", [None, "", "0", "no", "false"])
def test_missing_binary_skips_unless_required(value: str | None) -> None:
    env = {} if value is None else {REQUIRE_SERVICES_ENV: value}
    verdict = service_verdict("Redis", ["`redis-server`"], "apt-get install redis-server", env)
    assert verdict.action == "skip"
    assert "`redis-server`" in verdict.reason
    assert "apt-get install redis-server" in verdict.reason
    assert REQUIRE_SERVICES_ENV in verdict.reason


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_missing_binary_fails_when_required(value: str) -> None:
    env = {REQUIRE_SERVICES_ENV: value}
    verdict = service_verdict("PostgreSQL", ["`initdb`", "`postgres`"], "install pg", env)
    assert verdict.action == "fail"
    assert "PostgreSQL" in verdict.reason
    assert "`initdb`, `postgres`" in verdict.reason
    assert "install pg" in verdict.reason
    assert services_required(env)


def test_missing_binaries_looks_on_the_given_path() -> None:
    assert missing_binaries(["sh", "surely-no-such-binary-waypost"], path="/bin:/usr/bin") == [
        "`surely-no-such-binary-waypost`"
    ]
    assert missing_binaries(["sh"], path="") == ["`sh`"]


# --------------------------------------------------------------------------- PostgreSQL


async def _user_tables(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        )
    finally:
        await conn.close()
    return [row["table_name"] for row in rows]


@pytest.mark.postgres
@pytest.mark.anyio
async def test_postgres_is_version_15_and_throwaway(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://postgres@127.0.0.1:")
    assert postgres_url.endswith("/waypost")
    conn = await asyncpg.connect(postgres_url)
    try:
        version = await conn.fetchval("SELECT version()")
        assert version.startswith("PostgreSQL 15"), version
        assert await conn.fetchval("SELECT current_database()") == "waypost"
        assert await conn.fetchval("SHOW fsync") == "off"
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_fresh_database_is_empty_and_isolated(
    fresh_database: str, postgres_server: PostgresServer
) -> None:
    assert await _user_tables(fresh_database) == []
    other = postgres_server.create_database()
    try:
        conn = await asyncpg.connect(fresh_database)
        try:
            await conn.execute("CREATE TABLE only_here (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO only_here VALUES (1)")
        finally:
            await conn.close()
        assert await _user_tables(fresh_database) == ["only_here"]
        assert await _user_tables(other) == []
    finally:
        postgres_server.drop_database(other)


@pytest.mark.postgres
@pytest.mark.anyio
async def test_dropped_database_is_gone_even_with_open_connection(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    leaked = await asyncpg.connect(url)  # a test that forgets to close must not block the drop
    try:
        postgres_server.drop_database(url)
    finally:
        await leaked.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    finally:
        await conn.close()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_url_works_with_sqlalchemy_asyncpg(fresh_database: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(fresh_database.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(sqlalchemy.text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- Redis


@pytest.mark.redis
@pytest.mark.anyio
async def test_redis_ping_set_get(redis_db: str) -> None:
    client = aioredis.Redis.from_url(redis_db)
    try:
        assert await client.ping()
        assert await client.dbsize() == 0
        await client.set("waypost:smoke", "v1")
        assert await client.get("waypost:smoke") == b"v1"
    finally:
        await client.aclose()


@pytest.mark.redis
@pytest.mark.anyio
async def test_redis_db_starts_empty(redis_db: str) -> None:
    client = aioredis.Redis.from_url(redis_db, decode_responses=True)
    try:
        assert await client.dbsize() == 0
        await client.set("waypost:smoke", "left behind on purpose")
    finally:
        await client.aclose()
