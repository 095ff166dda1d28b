"""Replay's bulk path without a database: the raw-payload decoding against the projection,
the SQLite time text, the pipeline's order and errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.sql import rebuild
from adapters.sql.projection import _Rows
from adapters.sql.store_reads import _PgCodec, _SqliteCodec
from adapters.sql.tables import to_utc
from core.domain.envelope import REGISTRY, UnknownEventType
from core.domain.model import Event, EventRecorded, TenantCreated
from tests.contract.test_store import tenant

pytestmark = pytest.mark.anyio

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
aware_times = st.builds(
    lambda naive, minutes: naive.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)


def recorded(payload: dict[str, Any], created_at: datetime) -> EventRecorded:
    return EventRecorded(
        event=Event(
            id="01J0000000000000000000000E",
            tenant_id="01J0000000000000000000000T",
            name="app",
            version="1.0",
            release="1",
            platform_id="x86_64",
            package="rpm",
            description='d\u00e9j\u00e0 "vu"\n',
            payload=payload,
            success=True,
            event_receiver_id="01J0000000000000000000000R",
            created_at=created_at,
        )
    )


def projected(event: Any, codec: Any) -> tuple[list[Any], list[Any]]:
    rows = _Rows("01J0000000000000000000000T", codec, {})
    rows.add(event)
    return rows.events, list(rows.latest.values())


@given(payload=st.dictionaries(st.text(), json_values, max_size=6), created_at=aware_times)
def test_a_logged_event_projects_the_rows_its_append_projected(
    payload: dict[str, Any], created_at: datetime
) -> None:
    """The payload kept as the log's JSON text makes the same row, to the byte, as the
    payload the append had (the text an append writes is the JSON of the payload)."""
    event = recorded(payload, created_at)
    type_name, version, data = REGISTRY.encode(event)
    stored = msgspec.json.encode(data).decode()  # the log's `data` column
    decoded = rebuild.decode(type_name, version, stored)
    assert isinstance(decoded, EventRecorded)
    raw: object = decoded.event.payload  # typed as a dict; the decoder keeps it as text
    assert isinstance(raw, msgspec.Raw)  # nothing parsed
    for codec in (_SqliteCodec, _PgCodec):
        assert projected(decoded, codec) == projected(event, codec)


def test_other_entries_decode_as_the_registry_decodes_them() -> None:
    created = TenantCreated(tenant=tenant("01J0000000000000000000000T", "acme"))
    type_name, version, data = REGISTRY.encode(created)
    assert rebuild.decode(type_name, version, msgspec.json.encode(data)) == created
    event = recorded({"a": 1}, datetime(2026, 1, 1, tzinfo=UTC))
    type_name, version, data = REGISTRY.encode(event)
    with pytest.raises(UnknownEventType, match="newer than this build"):
        # Not the current version: never the raw decoder, the registry's own path.
        rebuild.decode(type_name, version + 1, msgspec.json.encode(data))


@given(value=aware_times)
def test_sqlite_times_are_the_text_of_the_utc_time_to_the_microsecond(value: datetime) -> None:
    expected = to_utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")
    assert _SqliteCodec.time(value) == expected
    assert _SqliteCodec.time(value.replace(microsecond=0)) == expected[:19] + ".000000"


class Log:
    """A log of `size` rows (position, ...) and what the pipeline did with it, in order."""

    def __init__(self, size: int, *, fail_write_at: int | None = None) -> None:
        self.rows = [(position, "x") for position in range(1, size + 1)]
        self.fail_write_at = fail_write_at
        self.done: list[str] = []

    async def fetch(self, after: int, batch: int) -> Sequence[Sequence[Any]]:
        self.done.append(f"fetch>{after}")
        return self.rows[after : after + batch]

    async def build(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        self.done.append(f"build {rows[0][0]}-begin")
        await anyio.lowlevel.checkpoint()
        self.done.append(f"build {rows[0][0]}-end")
        return [row[0] for row in rows]

    async def write(self, built: list[int], last: int) -> None:
        assert built[-1] == last
        self.done.append(f"write {built[0]}-begin")
        await anyio.sleep(0.01)  # the server at work
        if built[0] == self.fail_write_at:
            raise ValueError("the database refused")
        self.done.append(f"write {built[0]}-end")


async def run(log: Log, *, overlap: bool, after: int = 0, batch: int = 2) -> list[int]:
    return [
        count
        async for count in rebuild.pipelined(
            lambda position: log.fetch(position, batch),
            log.build,
            log.write,
            after=after,
            batch=batch,
            overlap=overlap,
        )
    ]


async def test_with_overlap_a_batch_is_built_while_the_one_before_is_written() -> None:
    log = Log(5)
    assert await run(log, overlap=True) == [2, 2, 1]
    assert log.done == [
        "fetch>0", "build 1-begin", "build 1-end",
        "fetch>2", "write 1-begin", "build 3-begin", "build 3-end", "write 1-end",
        "fetch>4", "write 3-begin", "build 5-begin", "build 5-end", "write 3-end",
        "write 5-begin", "write 5-end",
    ]  # fmt: skip


async def test_without_overlap_each_batch_is_fetched_built_and_written_in_turn() -> None:
    log = Log(4)
    assert await run(log, overlap=False, after=1) == [2, 1]
    assert log.done == [
        "fetch>1", "build 2-begin", "build 2-end", "write 2-begin", "write 2-end",
        "fetch>3", "build 4-begin", "build 4-end", "write 4-begin", "write 4-end",
    ]  # fmt: skip


@pytest.mark.parametrize("overlap", [True, False])
async def test_an_empty_log_writes_nothing(overlap: bool) -> None:
    log = Log(0)
    assert await run(log, overlap=overlap) == []
    assert log.done == ["fetch>0"]


@pytest.mark.parametrize("overlap", [True, False])
async def test_a_failed_write_raises_its_own_error_and_stops(overlap: bool) -> None:
    log = Log(7, fail_write_at=3)
    with pytest.raises(ValueError, match="the database refused"):  # not an exception group
        await run(log, overlap=overlap)
    assert "write 5-begin" not in log.done
