"""PostgreSQL's claim with thousands of due deliveries: planned to read the first few in the
due index's order, not every due one.

Two things make it so: the store ANALYZEs the deliveries when its dispatches cross
1k, 10k, ... (until then the table looks empty to the planner), and the claim's scan
checks the subscription with a subquery rather than a join (with the join the planner
read and sorted every due row: 2.6 ms at 3,000 due against 0.6 ms). Each test EXPLAINs
the statement the store sends, with the arguments a deliverer sends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from adapters.sql.delivery import SqlDeliveries
from adapters.sql.migrations import migrate
from adapters.sql.statistics import ANALYZE_AFTER
from tests.contract.test_delivery_store import T0, add, dispatch, new

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

DUE = 3_000
BODY = b'{"specversion": "1.0", "pad": "' + b"x" * 1000 + b'"}'  # a message's size


@pytest.fixture
async def filled(fresh_database: str) -> AsyncIterator[tuple[SqlDeliveries, str]]:
    await migrate(fresh_database)
    store = await SqlDeliveries.connect(fresh_database)
    try:
        sub = await add(store)
        for page in range(0, DUE, 500):  # in pages, as the dispatcher makes them
            made = [new(sub, n, body=BODY) for n in range(page + 1, page + 501)]
            await dispatch(store, sub, made)
        await analyzed(fresh_database)  # the store's refresh runs in the background
        yield store, fresh_database
    finally:
        await store.close()


async def plan(url: str, store: SqlDeliveries, *, analyze: bool) -> dict[str, Any]:
    query = store._sql.pg_claim[False]
    now = T0 + timedelta(hours=1)
    values: tuple[Any, ...] = (now, [], now - timedelta(seconds=30), 21 * 4 + 8, [], [], 8, 21, "c",
              now + timedelta(minutes=5))  # fmt: skip
    conn = await asyncpg.connect(url)
    try:
        if analyze:  # as autovacuum does in its time, with every delivery due
            await conn.execute("ANALYZE deliveries")
        for _ in range(6):  # past the custom plans: the generic plan is what stays
            await conn.fetch(query.sql, *query.bind(values))
            await conn.execute("UPDATE deliveries SET status = 'pending', claimed_by = NULL")
        raw = await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + query.sql, *query.bind(values)
        )
    finally:
        await conn.close()
    found: dict[str, Any] = json.loads(raw)[0]
    return found


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


async def analyzed(url: str) -> float:
    """The deliveries' row count as the planner knows it, once an ANALYZE (or a VACUUM)
    told it (PostgreSQL keeps -1 until then)."""
    conn = await asyncpg.connect(url)
    try:
        with anyio.fail_after(20):
            while True:
                rows: float = await conn.fetchval(
                    "SELECT reltuples FROM pg_class WHERE relname = 'deliveries'"
                )
                if rows >= 0:
                    return rows
                await anyio.sleep(0.05)
    finally:
        await conn.close()


async def test_dispatches_past_a_threshold_refresh_the_statistics(
    filled: tuple[SqlDeliveries, str],
) -> None:
    _, url = filled
    assert ANALYZE_AFTER[0] <= DUE < ANALYZE_AFTER[1]
    assert await analyzed(url) >= ANALYZE_AFTER[0]


@pytest.mark.parametrize("analyze", [False, True], ids=["store-analyzed", "all-analyzed"])
async def test_the_claim_reads_the_first_due_rows_in_index_order(
    filled: tuple[SqlDeliveries, str], analyze: bool
) -> None:
    store, url = filled
    found = plan(url, store, analyze=analyze)
    every = nodes((await found)["Plan"])
    scans = [n for n in every if n.get("Relation Name") == "deliveries"]
    due = [n for n in scans if n.get("Index Name") == "ix_deliveries_due"]
    assert due, [(n["Node Type"], n.get("Index Name")) for n in scans]
    assert all(n["Node Type"] == "Index Scan" for n in due)
    assert max(n["Actual Rows"] for n in due) <= 21 * 4 + 8  # stopped at the scan's limit
    assert not [n for n in scans if n["Node Type"] == "Seq Scan"]
