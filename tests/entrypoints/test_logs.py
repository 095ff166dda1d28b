"""The server's log: JSON lines with their fields, text lines, levels, uvicorn's records too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from entrypoints import logs
from entrypoints.settings import LogSettings, SettingsError, load_settings
from tests.http.conftest import PLATFORM, asgi_client, make_app, platform_identity
from tests.http.test_problems import BrokenReads


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    """`configure` changes process-wide loggers: put them back as they were."""
    loggers = {name: logging.getLogger(name) for name in logs.LOGGERS}
    saved = {name: (list(lg.handlers), lg.level, lg.propagate) for name, lg in loggers.items()}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = loggers[name]
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_extra_fields() -> None:
    out = io.StringIO()
    logs.configure(LogSettings(format="json"), out)
    logging.getLogger("waypost.http").warning(
        "slow %s", "thing", extra={"request_id": "r-1", "took_ms": 12.5}
    )
    [entry] = lines(out)
    assert entry["level"] == "warning"
    assert entry["logger"] == "waypost.http"
    assert entry["message"] == "slow thing"
    assert entry["request_id"] == "r-1"
    assert entry["took_ms"] == 12.5
    assert isinstance(entry["time"], str)
    assert entry["time"].endswith("Z")
    assert "msg" not in entry  # LogRecord's own attributes are not fields
    assert "args" not in entry


def test_an_exception_is_one_json_line_with_its_traceback() -> None:
    out = io.StringIO()
    logs.configure(LogSettings(format="json"), out)
    try:
        1 / 0  # noqa: B018 - the point is the exception
    except ZeroDivisionError:
        logging.getLogger("waypost").exception("it broke")
    assert len(out.getvalue().splitlines()) == 1
    [entry] = lines(out)
    assert isinstance(entry["exception"], str)
    assert "ZeroDivisionError" in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_text_lines_for_a_terminal() -> None:
    out = io.StringIO()
    logs.configure(LogSettings(format="text"), out)
    logging.getLogger("waypost.store").info("opened %s", "db")
    line = out.getvalue().strip()
    assert line.endswith("INFO waypost.store: opened db")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_level_filters_and_uvicorn_goes_through_the_same_handler() -> None:
    out = io.StringIO()
    logs.configure(LogSettings(format="json", level="WARNING"), out)
    logging.getLogger("waypost").info("dropped")
    logging.getLogger("uvicorn.error").warning("from uvicorn")
    assert [(e["logger"], e["message"]) for e in lines(out)] == [("uvicorn.error", "from uvicorn")]


def test_a_bad_log_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="WAYPOST__LOG__FORMAT"):
        load_settings({"WAYPOST__LOG__FORMAT": "xml"})
    with pytest.raises(SettingsError, match="WAYPOST__LOG__LEVEL"):
        load_settings({"WAYPOST__LOG__LEVEL": "LOUD"})


@pytest.mark.anyio
async def test_an_internal_error_is_logged_with_its_ids_as_fields() -> None:
    out = io.StringIO()
    logs.configure(LogSettings(format="json"), out)
    app = make_app(await platform_identity(), store=BrokenReads())
    async with asgi_client(app, headers=PLATFORM) as client:
        answer = await client.get("/api/v1/tenants", headers={"X-Request-ID": "req-json"})
    assert answer.status_code == 500
    [entry] = [e for e in lines(out) if e.get("error_id") == answer.json()["error_id"]]
    assert entry["request_id"] == "req-json"
    assert entry["path"] == "/api/v1/tenants"
    assert entry["level"] == "error"
    assert "Traceback" in str(entry["exception"])
