"""Handlers read what they need besides their parameters from the scope (the Services,
who calls, the request's context and claim): no route has Litestar resolve a dependency.

A dependency that takes the request costs Litestar a parse of its parameters on every
request (about 3.5% of a recorded event's instructions), one that takes none still costs
its resolution (about 1.3%), and dependencies of one level are resolved in a task group
(two tasks and their cancel scopes); this walk catches a route that brings one back."""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute

from adapters.memory.identity import MemoryIdentity
from tests.http.conftest import make_app


def dependencies(app: Litestar) -> dict[tuple[str, str], list[str]]:
    """(method, path) -> the names of the dependencies Litestar resolves for it."""
    found: dict[tuple[str, str], list[str]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            model = handler.create_kwargs_model(route.path_parameters)
            names = sorted(d.key for batch in model.dependency_batches for d in batch)
            for method in handler.http_methods:
                found[(method, route.path_format)] = names
    return found


def test_no_route_resolves_a_dependency() -> None:
    found = dependencies(make_app(MemoryIdentity()))
    assert ("POST", "/api/v1/events") in found
    assert {route: names for route, names in found.items() if names} == {}
