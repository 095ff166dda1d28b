"""The server's log: text lines for a terminal, or JSON lines for a log pipeline.

`log.format = "json"` makes every record one JSON object on one line: `time`
(RFC 3339, UTC, microseconds), `level`, `logger`, `message`, the record's extra
fields (`request_id`, `error_id`, ...), and `exception` with the traceback when
there is one. uvicorn's own records go through the same handler, so a pipeline
parses one format. Credentials never reach a log line (the first administrator's
key is printed on stdout instead, see `bootstrap.announce_on_stdout`). A record made
inside a traced request carries `trace_id` and `span_id` (`tracing.TraceIds`).

`log.levels` sets single loggers' levels over `log.level`: `waypost.sql=DEBUG` logs
every SQL statement with its duration, `uvicorn.access=INFO` turns uvicorn's access log
on (it is off otherwise).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import msgspec

from entrypoints.operations_settings import level_number
from entrypoints.settings import LogSettings
from entrypoints.tracing import TraceIds

__all__ = ["LOGGERS", "JsonFormatter", "access_log", "apply_levels", "configure"]

#: The loggers a server writes to: ours and uvicorn's.
LOGGERS: Final = ("waypost", "uvicorn", "uvicorn.error", "uvicorn.access")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has: anything else was passed as `extra` and is a field.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
_encode = msgspec.json.Encoder(enc_hook=str).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _encode(entry).decode()


def configure(settings: LogSettings, stream: TextIO | None = None) -> logging.Handler:
    """One handler (stderr unless `stream`) at `settings.level` for `LOGGERS`, then the
    levels of `settings.levels`; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(TraceIds())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(settings.level)
        logger.propagate = False
    for name in settings.levels:
        if not any(name == top or name.startswith(top + ".") for top in LOGGERS):
            logger = logging.getLogger(name)  # another library's logger: through ours too
            logger.handlers[:] = [handler]
            logger.propagate = False
    apply_levels(settings)
    return handler


def apply_levels(settings: LogSettings) -> None:
    """The levels of `log.levels` (again after uvicorn's Config, which sets its loggers')."""
    for name, level in settings.levels.items():
        logging.getLogger(name).setLevel(level_number(level))


def access_log(settings: LogSettings) -> bool:
    """Whether uvicorn's access log is wanted: `log.levels` sets `uvicorn.access` to INFO or
    lower (one line per request is too much for most deployments; metrics count them)."""
    level = settings.levels.get("uvicorn.access")
    return level is not None and level_number(level) <= logging.INFO
