"""The bare-framework reference: Litestar answering a JSON POST the way Waypost does,
with no storage, no validation against a schema, no middleware.

    python -m uvicorn bench.bare_app:app --port 8099
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, post


class Event(msgspec.Struct, kw_only=True):
    name: str
    version: str
    release: str
    platform_id: str
    package: str
    description: str = ""
    payload: dict[str, Any]
    success: bool
    event_receiver_id: str


class Batch(msgspec.Struct):
    events: list[Event]


@post("/api/v1/events", status_code=201)
async def record(data: Event) -> dict[str, str]:
    return {"data": "01JBENCH000000000000000000"}


@post("/api/v1/events/batch", status_code=201, request_max_body_size=16 * 1024 * 1024)
async def record_batch(data: Batch) -> dict[str, list[str]]:
    return {"data": ["01JBENCH000000000000000000"] * len(data.events)}


app = Litestar([record, record_batch], openapi_config=None)
