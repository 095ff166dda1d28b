"""Handlers read who calls from the scope; the one dependency Litestar resolves for any
route is `services`, which takes no parameters.

A dependency that takes the request costs Litestar a parse of its parameters on every
request (about 3.5% of a recorded event's instructions), and dependencies of one level
are resolved in a task group (two tasks and their cancel scopes); this walk catches a
route, or a provider, that brings either back."""

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


def test_no_route_resolves_more_than_the_services() -> None:
    levels = dependency_levels(make_app(MemoryIdentity()))
    other = {route: found for route, found in levels.items() if found not in ([], [["services"]])}
    assert other == {}


def test_the_ingest_routes_resolve_the_services_only() -> None:
    levels = dependency_levels(make_app(MemoryIdentity()))
    for path in ("/api/v1/events", "/api/v1/events/batch", "/epr/api/v1/events"):
        assert levels[("POST", path)] == [["services"]]
