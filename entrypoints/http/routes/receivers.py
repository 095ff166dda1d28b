"""Event receivers: register (idempotent), read, list."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.commands import RegisterReceiver
from core.domain.idempotency import Answer
from core.domain.model import Receiver
from core.ports import ReceiverFilter
from entrypoints.http.auth import actor_of, requires, services_of
from entrypoints.http.bodies import Body
from entrypoints.http.common import API, LOCATION, check_id, problems
from entrypoints.http.idempotency import IDEMPOTENT, answer, claim_of, once
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.views import IdData, ReceiverData, ReceiverPage, receiver_view

PATH = f"{API}/receivers"
KIND = "receivers"

Filter = Annotated[str | None, QueryParameter(description="Exact match.")]


@post(
    "/",
    opt=requires(Permission.RECEIVERS_CREATE) | IDEMPOTENT,
    dto=Body[RegisterReceiver],
    return_dto=None,
    status_code=201,
    summary="Register an event receiver",
    response_headers=LOCATION,
    description="201 with a new receiver's id; 200 with the existing id when an identical "
    "receiver (same name, type, version, schema and description) exists.",
    responses={
        200: ResponseSpec(
            IdData, description="An identical receiver exists.", generate_examples=False
        ),
        **problems(400, 401, 403, 409, 413, 422),
    },
)
async def register_receiver(*, data: JSONBody[RegisterReceiver], scope: Scope) -> Response[IdData]:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    receiver, was_created = await services.receivers.register(actor, data, once(claim, _answer))
    if was_created:
        return Response(
            IdData(receiver.id), status_code=201, headers={"Location": f"{PATH}/{receiver.id}"}
        )
    return Response(IdData(receiver.id), status_code=200)


def _answer(registered: tuple[Receiver, bool]) -> Answer:
    receiver, was_created = registered
    if was_created:
        return answer(201, IdData(receiver.id), location=f"{PATH}/{receiver.id}")
    return answer(200, IdData(receiver.id))


@get(
    "/{receiver_id:str}",
    summary="Read an event receiver",
    description="The receiver with its JSON Schema and fingerprint (SHA-256 of the canonical "
    "JSON of name, type, version and schema).",
    responses=problems(401, 403, 404),
    opt=requires(Permission.RECEIVERS_READ),
)
async def get_receiver(*, receiver_id: FromPath[str], scope: Scope) -> ReceiverData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id("event receiver", receiver_id)
    return ReceiverData(receiver_view(await services.receivers.get(actor, receiver_id)))


@get(
    "/",
    summary="List event receivers",
    description="The tenant's receivers, newest first unless `order=asc`; `name`, `type` and "
    "`version` filter by exact match.",
    responses=problems(400, 401, 403),
    opt=requires(Permission.RECEIVERS_READ),
)
async def list_receivers(
    *,
    name: Filter = None,
    type: Filter = None,
    version: Filter = None,
    fingerprint: Filter = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
    scope: Scope,
) -> ReceiverPage:
    services = services_of(scope)
    actor = actor_of(scope)
    page = page_request(KIND, limit, cursor, order)
    where = ReceiverFilter(name=name, type=type, version=version, fingerprint=fingerprint)
    found = await services.receivers.list(actor, where, page)
    return page_of(KIND, found, limit=limit, order=order, view=receiver_view, page=ReceiverPage)


HANDLERS = [register_receiver, get_receiver, list_receivers]
