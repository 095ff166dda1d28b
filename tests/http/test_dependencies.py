"""Every route's dependencies resolve one after the other, never in a task group.

Litestar resolves the dependencies of one level (none depending on another) in a task
group: two tasks and their cancel scopes per request, more than the providers cost. The
providers name each other so that they form a chain (`entrypoints.http.auth`, above
`provide_access`); this walk catches a route, or a provider, that breaks it."""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute

from adapters.memory.identity import MemoryIdentity
from tests.http.conftest import make_app


def dependency_levels(app: Litestar) -> dict[tuple[str, str], list[list[str]]]:
    """(method, path) -> the names of the dependencies Litestar resolves at each level."""
    found: dict[tuple[str, str], list[list[str]]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            model = handler.create_kwargs_model(route.path_parameters)
            levels = [sorted(d.key for d in batch) for batch in model.dependency_batches]
            for method in handler.http_methods:
                found[(method, route.path_format)] = levels
    return found


def test_no_route_resolves_dependencies_in_a_task_group() -> None:
    levels = dependency_levels(make_app(MemoryIdentity()))
    parallel = {route: found for route, found in levels.items() if any(len(x) > 1 for x in found)}
    assert parallel == {}


def test_the_ingest_routes_resolve_services_actor_then_claim() -> None:
    levels = dependency_levels(make_app(MemoryIdentity()))
    for path in ("/api/v1/events", "/api/v1/events/batch", "/epr/api/v1/events"):
        assert levels[("POST", path)] == [["services"], ["actor"], ["claim"]]
    assert levels[("POST", "/api/v1/api-keys")] == [["services"], ["ctx"], ["access"], ["claim"]]
