"""Liveness and readiness probes (public)."""

from __future__ import annotations

import logging
from typing import Final

import anyio
from litestar import Response, get

from core.ports import PageRequest
from entrypoints.http.auth import PUBLIC
from entrypoints.http.common import ServicesDep
from entrypoints.http.views import Component, Readiness, Status

READY_TIMEOUT_SECONDS: Final = 2.0
log = logging.getLogger("waypost.http")


@get(
    "/healthz/live",
    opt=PUBLIC,
    summary="The process runs",
    description="200 while the process runs; nothing else is checked (a liveness probe).",
    tags=["operations"],
)
async def live() -> Status:
    return Status(status="ok")


@get(
    "/healthz/ready",
    opt=PUBLIC,
    summary="The server can serve: a read transaction on the store works",
    description="200 when ready, 503 (with Retry-After) when not.",
    tags=["operations"],
)
async def ready(services: ServicesDep) -> Response[Readiness]:
    try:
        with anyio.fail_after(READY_TIMEOUT_SECONDS):
            async with services.deps.store.read() as tx:
                await tx.tenants.list(PageRequest(limit=1))
    except Exception:
        log.exception("readiness: the store's read transaction failed")
        store = Component(status="unavailable", detail="a read transaction failed")
        return Response(
            Readiness(status="unavailable", components={"store": store}),
            status_code=503,
            headers={"Retry-After": "5"},
        )
    store = Component(status="ok", detail="a read transaction works")
    return Response(Readiness(status="ok", components={"store": store}), status_code=200)


HANDLERS = [live, ready]
