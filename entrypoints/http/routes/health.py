"""Liveness and readiness probes (public)."""

from __future__ import annotations

import logging
from typing import Final

import anyio
from litestar import Response, get
from litestar.types import Scope

from core.ports import PageRequest, Unavailable
from core.usecases import Services
from entrypoints.http.auth import PUBLIC, services_of
from entrypoints.http.limits import Limits, limits_of
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
    description="200 when ready (`status` `degraded` when a part works in a lesser way, "
    "such as rate limits per process while Redis fails, or reads on the primary while the "
    "read replica cannot serve them), 503 (with Retry-After) when not.",
    tags=["operations"],
)
async def ready(scope: Scope) -> Response[Readiness]:
    services = services_of(scope)
    answer = await _readiness(services, limits_of(scope["app"].state))
    metrics = metrics_of(scope)
    if metrics is not None:
        metrics.operations.ready = {
            name: READY_VALUES.get(component.status, 0.0)
            for name, component in answer.content.components.items()
        }
    return answer


#: How `waypost_ready` counts a component's status.
READY_VALUES: Final = {"ok": 1.0, "degraded": 0.5}


async def _readiness(services: Services, limits: Limits) -> Response[Readiness]:
    components = {"rate_limits": _rate_limits(limits)}
    try:
        with anyio.fail_after(READY_TIMEOUT_SECONDS):
            async with services.deps.store.read() as tx:
                await tx.tenants.list(PageRequest(limit=1))
    except Exception as exc:
        # One line, not a traceback per probe: the store logs an outage's cause once.
        cause = exc.cause if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
        log.warning("readiness: the store's read transaction failed (%s)", cause)
        components["store"] = Component(status="unavailable", detail="a read transaction failed")
        return Response(
            Readiness(status="unavailable", components=components),
            status_code=503,
            headers={"Retry-After": "5"},
        )
    components["store"] = Component(status="ok", detail="a read transaction works")
    replica = getattr(services.deps.store, "readiness", None)  # a read replica's state
    if replica is not None:
        replica_status, detail = replica()
        components["replica"] = Component(status=replica_status, detail=detail)
    # A degraded part (rate limits per process while Redis fails, reads on the primary
    # while the replica cannot serve them) does not stop the server from serving: still
    # 200, so that no load balancer takes every server out.
    status = "ok" if all(c.status == "ok" for c in components.values()) else "degraded"
    return Response(Readiness(status=status, components=components), status_code=200)


def _rate_limits(limits: Limits) -> Component:
    rates = limits.rates
    if rates.shared is None:
        return Component(status="ok", detail="per server process (no Redis configured)")
    if rates.sharing:
        return Component(status="ok", detail="shared through Redis")
    return Component(
        status="degraded",
        detail="per server process while Redis fails; shared again once it answers",
    )


HANDLERS = [live, ready]
