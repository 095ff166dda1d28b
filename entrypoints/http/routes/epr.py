"""`/epr`: the registry as SAS's Event Provenance Registry answers, for EPR's clients.

EPR's Go client and `epr-cli`, epr-python and its watchers work unchanged with a
base URL such as `https://any:wp_...@host/epr`. A thin adapter over the same use
cases as `/api/v1` (no rule is implemented twice); only the shapes are EPR's:

- `POST /epr/api/v1/{events,receivers,groups}` -> **200** `{"data": "<id>"}`; with an
  `Idempotency-Key`, as their `/api/v1` twins: a retry gets that answer again;
- `GET .../{id}` -> `{"data": [object]}` (an event carries its `EventReceiver`);
- `PATCH /epr/api/v1/groups/{id}` `{"enabled": bool}` -> `{"data": "<id>"}`;
- errors -> `{"errors": ["invalid input: ..."]}` (400), `{"errors": ["object not
  found: ..."]}` (404), and for what EPR never had: 401, 403, 409, 413, 429, 503
  (overloaded, or the database cannot serve) in the same envelope;
- unknown input fields are ignored (EPR's clients post whole objects), `success`
  and a group's `enabled` default to false, as in EPR;
- `POST /epr/api/v1/graphql/query`: the GraphQL endpoint, unknown input fields in
  the variables ignored; `/epr/healthz/liveness|readiness|status`.

Authentication and tenant scoping are Waypost's (Bearer, or Basic from the URL's
userinfo). Where EPR's behaviour was a bug, Waypost's semantics stand
(docs/how-to/move-from-epr.md lists the differences).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, TypeVar

import anyio
import msgspec
from litestar import Request, Response, get, patch, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.types import ExceptionHandlersMap, Scope

from core.domain.access import Permission
from core.domain.commands import CreateGroup, PatchGroup, RecordEvent, RegisterReceiver
from core.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    Unauthenticated,
)
from core.domain.idempotency import Answer
from core.domain.ids import is_ulid
from core.domain.model import Event, Group, Receiver
from core.ports import PageRequest, Unavailable
from entrypoints.http.auth import PUBLIC, actor_of, requires, services_of
from entrypoints.http.gql.execution import Endpoint
from entrypoints.http.idempotency import IDEMPOTENT, answer, claim_of, once
from entrypoints.http.metrics import count_recorded
from entrypoints.http.problems import UNAVAILABLE_RETRY_AFTER, HttpProblem, challenge
from entrypoints.http.routes import graphql

__all__ = ["EXCEPTION_HANDLERS", "PATH", "PUBLIC_HANDLERS", "ROOT", "handlers"]

ROOT: Final = "/epr"
PATH: Final = f"{ROOT}/api/v1"
JSON: Final = "application/json"
_STARTED_MONOTONIC: Final = time.monotonic()
_STARTED_AT: Final = datetime.now(UTC)

log = logging.getLogger("waypost.http")
T = TypeVar("T")


# --- EPR's input objects: every field optional, unknown ones ignored ---------------------------


class _EventIn(msgspec.Struct, kw_only=True):
    name: str = ""
    version: str = ""
    release: str = ""
    platform_id: str = ""
    package: str = ""
    description: str = ""
    payload: Any = msgspec.field(default_factory=dict)
    success: bool = False
    event_receiver_id: str = ""


class _ReceiverIn(msgspec.Struct, kw_only=True):
    name: str = ""
    type: str = ""
    version: str = ""
    description: str = ""
    schema: Any = None


class _GroupIn(msgspec.Struct, kw_only=True):
    name: str = ""
    type: str = ""
    version: str = ""
    description: str = ""
    enabled: bool = False
    event_receiver_ids: list[str] = msgspec.field(default_factory=list)


class _ToggleIn(msgspec.Struct, kw_only=True):
    enabled: bool | None = None


class EprError(Exception):
    """An answer in EPR's error envelope."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


_DECODERS: Final[dict[type[Any], msgspec.json.Decoder[Any]]] = {
    cls: msgspec.json.Decoder(cls) for cls in (_EventIn, _ReceiverIn, _GroupIn, _ToggleIn)
}


async def _body(request: Request[Any, Any, Any], cls: type[T]) -> T:
    """The body as EPR read it: JSON of the right types; unknown fields ignored."""
    raw = await request.body()
    try:
        decoded: T = _DECODERS[cls].decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EprError(400, f"invalid input: {exc}") from None
    return decoded


def _json_object(value: Any, field: str) -> dict[str, Any]:
    """An object, or a JSON-encoded string of one (what EPR's JSON type stored)."""
    if isinstance(value, str):
        with contextlib.suppress(msgspec.DecodeError):
            value = msgspec.json.decode(value)
    if not isinstance(value, dict):
        raise Invalid("The input is invalid.", [FieldError(field, "must be a JSON object")])
    return value


def _ok(data: Any) -> Response[bytes]:
    return Response(msgspec.json.encode({"data": data}), status_code=200, media_type=JSON)


def _created(ident: str) -> Answer:
    """`_ok(ident)` as an Idempotency-Key record stores it (replayed to a retry)."""
    return answer(200, {"data": ident}, content_type=JSON)


async def _found(kind: str, ident: str, read: Callable[[], Awaitable[T]]) -> T:
    """`read()`, or EPR's 404 for `kind` (`event`, `eventReceiver`, `eventReceiverGroup`)."""
    message = f"object not found: {kind} with id {ident} not found"
    if not is_ulid(ident):
        raise EprError(404, message)
    try:
        return await read()
    except NotFound:
        raise EprError(404, message) from None


# --- EPR's objects, in EPR's key order ---------------------------------------------------------


def receiver_object(r: Receiver) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "type": r.type,
        "version": r.version,
        "description": r.description,
        "schema": r.schema,
        "fingerprint": r.fingerprint,
        "created_at": r.created_at,
    }


def event_object(e: Event, r: Receiver) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": e.name,
        "version": e.version,
        "release": e.release,
        "platform_id": e.platform_id,
        "package": e.package,
        "description": e.description,
        "payload": e.payload,
        "success": e.success,
        "created_at": e.created_at,
        "event_receiver_id": e.event_receiver_id,
        "EventReceiver": receiver_object(r),
    }


def group_object(g: Group) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "type": g.type,
        "version": g.version,
        "description": g.description,
        "enabled": g.enabled,
        "event_receiver_ids": list(g.event_receiver_ids),
        "created_at": g.created_at,
        "updated_at": g.updated_at,
    }


# --- the REST routes (relative to PATH) ---------------------------------------------------------


@post(
    "/events",
    opt=requires(Permission.EVENTS_CREATE) | IDEMPOTENT,
    status_code=200,
    include_in_schema=False,
)
async def create_event(request: Request[Any, Any, Any], scope: Scope) -> Response[bytes]:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    given = await _body(request, _EventIn)
    cmd = RecordEvent(
        name=given.name,
        version=given.version,
        release=given.release,
        platform_id=given.platform_id,
        package=given.package,
        description=given.description,
        payload=_json_object(given.payload, "/payload"),
        success=given.success,
        event_receiver_id=given.event_receiver_id,
    )
    outcome = await services.events.record_outcome(
        actor, cmd, once(claim, lambda recorded: _created(recorded.events[0].id))
    )
    count_recorded(scope, outcome)
    return _ok(outcome.events[0].id)


@get("/events/{event_id:str}", opt=requires(Permission.EVENTS_READ), include_in_schema=False)
async def get_event(event_id: FromPath[str], scope: Scope) -> Response[bytes]:
    services = services_of(scope)
    actor = actor_of(scope)
    event = await _found("event", event_id, lambda: services.events.get(actor, event_id))
    receiver = await services.receivers.get(actor, event.event_receiver_id)
    return _ok([event_object(event, receiver)])


@post(
    "/receivers",
    opt=requires(Permission.RECEIVERS_CREATE) | IDEMPOTENT,
    status_code=200,
    include_in_schema=False,
)
async def create_receiver(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request.scope)
    actor = actor_of(request.scope)
    claim = claim_of(request.scope)
    given = await _body(request, _ReceiverIn)
    cmd = RegisterReceiver(
        name=given.name,
        type=given.type,
        version=given.version,
        description=given.description,
        schema=_json_object(given.schema, "/schema"),
    )
    receiver, _ = await services.receivers.register(
        actor, cmd, once(claim, lambda registered: _created(registered[0].id))
    )
    return _ok(receiver.id)


@get(
    "/receivers/{receiver_id:str}", opt=requires(Permission.RECEIVERS_READ), include_in_schema=False
)
async def get_receiver(receiver_id: FromPath[str], scope: Scope) -> Response[bytes]:
    services = services_of(scope)
    actor = actor_of(scope)
    receiver = await _found(
        "eventReceiver", receiver_id, lambda: services.receivers.get(actor, receiver_id)
    )
    return _ok([receiver_object(receiver)])


@post(
    "/groups",
    opt=requires(Permission.GROUPS_CREATE) | IDEMPOTENT,
    status_code=200,
    include_in_schema=False,
)
async def create_group(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request.scope)
    actor = actor_of(request.scope)
    claim = claim_of(request.scope)
    given = await _body(request, _GroupIn)
    cmd = CreateGroup(
        name=given.name,
        type=given.type,
        version=given.version,
        description=given.description,
        enabled=given.enabled,
        event_receiver_ids=given.event_receiver_ids,
    )
    group = await services.groups.create(actor, cmd, once(claim, lambda made: _created(made.id)))
    return _ok(group.id)


@get("/groups/{group_id:str}", opt=requires(Permission.GROUPS_READ), include_in_schema=False)
async def get_group(group_id: FromPath[str], scope: Scope) -> Response[bytes]:
    services = services_of(scope)
    actor = actor_of(scope)
    group = await _found(
        "eventReceiverGroup", group_id, lambda: services.groups.get(actor, group_id)
    )
    return _ok([group_object(group)])


@patch("/groups/{group_id:str}", opt=requires(Permission.GROUPS_UPDATE), include_in_schema=False)
async def toggle_group(group_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request.scope)
    actor = actor_of(request.scope)
    given = await _body(request, _ToggleIn)
    if given.enabled is None:
        raise EprError(400, "invalid input: enabled is required (true or false)")
    enabled = given.enabled
    await _found(
        "eventReceiverGroup",
        group_id,
        lambda: services.groups.patch(actor, group_id, PatchGroup(enabled=enabled)),
    )
    return _ok(group_id)


def handlers(endpoint: Endpoint) -> list[Any]:
    """The authenticated routes under PATH: REST and GraphQL."""
    gql = graphql.post_handler(
        endpoint, ["/graphql/query"], lenient=True, summary="GraphQL for EPR's clients"
    )
    return [
        create_event,
        get_event,
        create_receiver,
        get_receiver,
        create_group,
        get_group,
        toggle_group,
        gql,
    ]


# --- health, as EPR answers it (public) ---------------------------------------------------------

_ALIVE: Final = '{"alive":true}'
_READY: Final = '{"ready":true}'
_NOT_READY: Final = '{"ready":false}'
READY_TIMEOUT_SECONDS: Final = 2.0


def _string(text: str, status: int = 200) -> Response[bytes]:
    """EPR's probes answer a JSON *string* holding JSON (`"{\\"alive\\":true}"`)."""
    return Response(msgspec.json.encode(text), status_code=status, media_type=JSON)


async def _ready(services: Any) -> bool:
    try:
        with anyio.fail_after(READY_TIMEOUT_SECONDS):
            async with services.deps.store.read() as tx:
                await tx.tenants.list(PageRequest(limit=1))
    except Exception:
        log.exception("readiness (/epr): the store's read transaction failed")
        return False
    return True


@get(f"{ROOT}/healthz/liveness", opt=PUBLIC, include_in_schema=False)
async def liveness() -> Response[bytes]:
    return _string(_ALIVE)


@get(f"{ROOT}/healthz/readiness", opt=PUBLIC, include_in_schema=False)
async def readiness(*, scope: Scope) -> Response[bytes]:
    services = services_of(scope)
    if await _ready(services):
        return _string(_READY)
    return _string(_NOT_READY, 503)


def _version() -> str:
    try:
        return version("waypost")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "dev"


@get(f"{ROOT}/healthz/status", opt=PUBLIC, include_in_schema=False)
async def status(*, scope: Scope) -> Response[bytes]:
    services = services_of(scope)
    ready = await _ready(services)
    body = {
        "service": {"name": "waypost", "version": _version(), "release": ""},
        "uptime": f"{time.monotonic() - _STARTED_MONOTONIC:.1f}s",
        "debug": False,
        "health": {"readiness": _READY if ready else _NOT_READY, "liveness": _ALIVE},
        "start_time": _STARTED_AT,
        "host": "",
        "port": "",
        "metadata": {"verbose": False, "resources": ""},
    }
    return Response(msgspec.json.encode(body), status_code=200, media_type=JSON)


PUBLIC_HANDLERS: Final = [
    liveness,
    readiness,
    status,
    *graphql.graphiql_handlers(f"{PATH}/graphql", f"{PATH}/graphql/query"),
]


# --- every error in EPR's envelope ---------------------------------------------------------------

_PREFIX: Final[tuple[tuple[type[DomainError], int, str], ...]] = (
    (Invalid, 400, "invalid input"),
    (NotFound, 404, "object not found"),
    (TooLarge, 413, "too large"),
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (Conflict, 409, "conflict"),
)


def _errors(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response[bytes]:
    body = msgspec.json.encode({"errors": [message]})
    return Response(body, status_code=status, media_type=JSON, headers=dict(headers or {}))


def _epr_error(_: Request[Any, Any, Any], exc: EprError) -> Response[bytes]:
    return _errors(exc.status, exc.message, exc.headers)


def _domain(_: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    """EPR joined its validation messages with newlines after `invalid input: `."""
    lines = [exc.detail, *(f"{e.field}: {e.message}" for e in exc.errors)]
    for cls, code, prefix in _PREFIX:
        if isinstance(exc, cls):
            headers = None
            if isinstance(exc, Unauthenticated):
                headers = {"WWW-Authenticate": challenge(exc)}
            return _errors(code, f"{prefix}: " + "\n".join(lines), headers)
    return _internal(_, exc)  # pragma: no cover - every DomainError subclass is in the table


def _http_problem(_: Request[Any, Any, Any], exc: HttpProblem) -> Response[bytes]:
    lines = [exc.detail, *(f"{e.field}: {e.message}" for e in exc.errors)]
    prefix = "invalid input: " if exc.status == 400 else ""
    return _errors(exc.status, prefix + "\n".join(lines), exc.headers)


def _unavailable(_: Request[Any, Any, Any], exc: Unavailable) -> Response[bytes]:
    """The database cannot serve (the store logged why, once): 503, nothing written."""
    return _errors(
        503,
        "unavailable: the database cannot serve right now; nothing was written",
        {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def _litestar(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code >= 500:
        return _internal(_, exc)
    messages = {404: "object not found", 405: "method not allowed", 413: "request too large"}
    message = messages.get(exc.status_code, "invalid input: the request is malformed")
    return _errors(exc.status_code, message, exc.headers)


def _internal(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    error_id = secrets.token_hex(8)
    log.error("internal error %s (/epr)", error_id, exc_info=exc, extra={"error_id": error_id})
    return _errors(500, "internal server error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    EprError: _epr_error,
    Unavailable: _unavailable,
    DomainError: _domain,
    HttpProblem: _http_problem,
    HTTPException: _litestar,
    Exception: _internal,
}
