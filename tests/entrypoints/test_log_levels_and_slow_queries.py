"""`log.levels` (per-logger levels) and `log.slow_query_ms` (slow statements, by catalogue name)."""

from __future__ import annotations

import io
import json
import logging
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.sql.migrations import migrate
from adapters.sql.observe import StatementObserver
from adapters.sql.store import SqlStore
from core.ports import PageRequest
from entrypoints import logs
from entrypoints.settings import LogSettings, SettingsError, load_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, list[logging.Logger]]]:
    stream = io.StringIO()
    touched: list[logging.Logger] = []
    yield stream, touched
    for logger in [*(logging.getLogger(n) for n in logs.LOGGERS), *touched]:
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def _configure(captured: tuple[io.StringIO, list[logging.Logger]], **log: Any) -> io.StringIO:
    stream, touched = captured
    settings = LogSettings(format="json", **log)
    logs.configure(settings, stream)
    touched.extend(logging.getLogger(name) for name in settings.levels)
    return stream


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_levels_come_from_the_environment_as_name_equals_level() -> None:
    settings = load_settings({"WAYPOST__LOG__LEVELS": "waypost.sql=DEBUG, uvicorn.access=WARNING"})
    assert settings.log.levels == {"waypost.sql": "DEBUG", "uvicorn.access": "WARNING"}
    for bad, named in (
        ("waypost.sql=LOUD", "waypost.sql=LOUD is not a level"),
        ("waypost.sql", "'waypost.sql' is not name=value"),
        ("waypost..sql=INFO", "is not a logger name"),
    ):
        with pytest.raises(SettingsError, match=named):
            load_settings({"WAYPOST__LOG__LEVELS": bad})
    with pytest.raises(SettingsError, match="slow_query_ms"):
        load_settings({"WAYPOST__LOG__SLOW_QUERY_MS": "-1"})


def test_a_logger_gets_its_own_level_over_the_general_one(
    captured: tuple[io.StringIO, list[logging.Logger]],
) -> None:
    stream = _configure(
        captured, level="WARNING", levels={"waypost.sql": "DEBUG", "waypost.http": "ERROR"}
    )
    logging.getLogger("waypost.sql").debug("statement")
    logging.getLogger("waypost.http").warning("not shown")
    logging.getLogger("waypost").info("not shown either")
    logging.getLogger("waypost").warning("shown")
    assert [line["message"] for line in _lines(stream)] == ["statement", "shown"]


def test_uvicorns_access_log_is_on_only_when_asked_for() -> None:
    assert not logs.access_log(LogSettings())
    assert not logs.access_log(LogSettings(levels={"uvicorn.access": "WARNING"}))
    assert logs.access_log(LogSettings(levels={"uvicorn.access": "INFO"}))


async def _store(tmp_path: pathlib.Path) -> SqlStore:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    await migrate(url)
    return await SqlStore.connect(url)


async def test_slow_statements_are_logged_by_catalogue_name_with_their_duration(
    tmp_path: pathlib.Path, captured: tuple[io.StringIO, list[logging.Logger]]
) -> None:
    stream = _configure(captured)
    store = await _store(tmp_path)
    try:
        store.observe(StatementObserver(system="sqlite", slow_ms=1e-6))  # everything is slow
        async with store.read() as tx:
            await tx.tenants.list(PageRequest(limit=1))
            await tx.log.head("t1")
        store.observe(StatementObserver(system="sqlite", slow_ms=60_000))  # nothing is
        async with store.read() as tx:
            await tx.log.head("t1")
    finally:
        await store.close()
    lines = _lines(stream)
    assert [(line["logger"], line["level"], line["statement"]) for line in lines] == [
        ("waypost.sql", "warning", "tenants_page"),
        ("waypost.sql", "warning", "head"),
    ]
    assert all(line["duration_ms"] >= 0 for line in lines)
    assert "SELECT" not in stream.getvalue()  # the name, never the text


async def test_with_waypost_sql_at_debug_every_statement_is_logged(
    tmp_path: pathlib.Path, captured: tuple[io.StringIO, list[logging.Logger]]
) -> None:
    stream = _configure(captured, levels={"waypost.sql": "DEBUG"})
    store = await _store(tmp_path)
    try:
        store.observe(StatementObserver(system="sqlite", slow_ms=60_000))
        async with store.read() as tx:
            await tx.log.head("t1")
    finally:
        await store.close()
    [line] = _lines(stream)
    assert (line["level"], line["statement"]) == ("debug", "head")


def test_an_observer_that_would_do_nothing_is_not_installed() -> None:
    assert not StatementObserver(system="sqlite", slow_ms=0).active
    assert StatementObserver(system="sqlite", slow_ms=500).active
