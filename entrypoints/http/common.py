"""What every route module shares: the Services dependency, created answers, documented errors."""

from __future__ import annotations

from typing import Final, TypeAlias

from litestar import Response
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import SkipValidation

from core.domain.ids import is_ulid
from core.usecases import Access, Actor, RequestContext, Services
from core.usecases.common import not_found
from entrypoints.http.problems import PROBLEM_JSON, Problem
from entrypoints.http.views import IdData

API: Final = "/api/v1"

#: How handlers ask for the use cases and for the caller (injected by name, not validated).
ServicesDep: TypeAlias = NamedDependency[SkipValidation[Services]]
ActorDep: TypeAlias = NamedDependency[SkipValidation[Actor]]
AccessDep: TypeAlias = NamedDependency[SkipValidation[Access]]
ContextDep: TypeAlias = NamedDependency[SkipValidation[RequestContext]]

_DESCRIPTIONS: Final = {
    400: "Malformed JSON, wrong shape or type, bad query parameter or cursor.",
    401: "No credential, or one that is not accepted (WWW-Authenticate says so).",
    403: "Authenticated, but no role of the principal grants this.",
    404: "Nothing there, or another tenant's.",
    409: "Conflict with what is stored, or the same Idempotency-Key still running.",
    413: "Body or batch too large.",
    422: "Well-formed but refused by the rules; every error is listed.",
    429: "Over the credential's (or the address's) rate limit; Retry-After says when to retry.",
    503: "The server is at its limit of requests in flight, or the database cannot serve "
    "right now (nothing was written); Retry-After says when to retry.",
}
#: What every API route may answer besides its own refusals: 422 for a query parameter
#: holding NUL (entrypoints/http/queries.py), 429 and 503 (entrypoints/http/limits.py).
LIMITED: Final = (422, 429, 503)


class ServicesSlot:
    """Where the lifespan puts the Services and the `services` dependency finds them.

    `provide` takes no parameters, so Litestar has nothing to parse for it on each
    request. It must be registered on the app itself: Litestar deep-copies
    routers, and a copied slot would never see the Services.
    """

    def __init__(self) -> None:
        self.services: Services | None = None

    def provide(self) -> Services:
        services = self.services
        if services is None:  # pragma: no cover - handlers run only inside the lifespan
            raise RuntimeError("the app's lifespan has not opened the services")
        return services


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI descriptions of the problem answers a route may give (and `LIMITED`'s).

    400 is always among them: Litestar documents a 400 of its own shape for any route
    with parameters, and every 400 of this API is a problem document."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_DESCRIPTIONS[status],
            generate_examples=False,
        )
        for status in sorted({400, *statuses, *LIMITED})
    }


#: The OpenAPI description of a create's `Location` header.
LOCATION: Final = [
    ResponseHeader(
        name="Location",
        description="Where the new thing is read.",
        documentation_only=True,
    )
]


def created(location: str, ident: str) -> Response[IdData]:
    """201 `{"data": "<id>"}` with the new thing's address."""
    return Response(IdData(ident), status_code=201, headers={"Location": location})


def check_id(kind: str, ident: str) -> None:
    """Something that is not an id names nothing: 404 before any store is asked."""
    if not is_ulid(ident):
        raise not_found(kind, ident)
