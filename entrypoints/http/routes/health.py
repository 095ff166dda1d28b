"""Liveness and readiness probes (public)."""

from __future__ import annotations

import logging
from typing import Final

import anyio
from litestar import Response, get
from litestar.types import Scope

from core.ports import PageRequest
from entrypoints.http.auth import PUBLIC
from entrypoints.http.common import ServicesDep
from entrypoints.http.metrics import metrics_of
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
async def ready(services: ServicesDep, scope: Scope) -> Response[Readiness]:
    answer = await _readiness(services)
    metrics = metrics_of(scope)
    if metrics is not None:
        metrics.operations.ready = {
            name: READY_VALUES.get(component.status, 0.0)
            for name, component in answer.content.components.items()
        }
    return answer


#: How `waypost_ready` counts a component's status.
READY_VALUES: Final = {"ok": 1.0, "degraded": 0.5}


async def _readiness(services: ServicesDep) -> Response[Readiness]:
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
    components = {"store": Component(status="ok", detail="a read transaction works")}
    replica = getattr(services.deps.store, "readiness", None)  # a read replica's state
    if replica is not None:
        status, detail = replica()
        components["replica"] = Component(status=status, detail=detail)
    overall = "ok" if all(c.status == "ok" for c in components.values()) else "degraded"
    return Response(Readiness(status=overall, components=components), status_code=200)


HANDLERS = [live, ready]
