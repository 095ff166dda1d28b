"""Subscriptions (webhooks): create, read, list, change, delete; the secret; ping, replay,
redrive; a subscription's deliveries and their attempts.

The secret is never part of a subscription's answers: `GET .../secret` reads it (whoever
may update the subscription may), `POST .../secret/rotate` makes a new one.

Every POST takes the request's Idempotency-Key claim: its answer is stored with its
write. A rotation's answer holds the new secret, which is never stored: what is stored,
and replayed to a retry, is a 409 saying that the first request rotated the secret and
where to read it (`GET .../secret`, audited), as `POST /api/v1/api-keys` does for a key.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Response, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.commands import (
    CreateSubscription,
    PatchSubscription,
    Redrive,
    Replay,
    RotateSecret,
)
from core.domain.delivery import Attempt, Delivery, DeliveryStatus
from core.domain.errors import FieldError
from core.domain.idempotency import Answer
from core.domain.subscriptions import Ordering, Subscription, SubscriptionFilter
from entrypoints.http.auth import actor_of, requires, services_of
from entrypoints.http.bodies import Body
from entrypoints.http.common import (
    API,
    LOCATION,
    check_id,
    created,
    problems,
)
from entrypoints.http.idempotency import HEADER, IDEMPOTENT, answer, claim_of, created_answer, once
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.problems import PROBLEM_JSON, Problem
from entrypoints.http.views import IdData, Page

PATH = f"{API}/subscriptions"
KIND = "subscriptions"
DELIVERIES = "deliveries"
SUBSCRIPTION = "subscription"
DELIVERY = "delivery"


# --- what the API answers -------------------------------------------------------------------


class SubscriptionView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    url: str
    description: str
    enabled: bool
    filter: SubscriptionFilter
    ordering: Ordering
    created_at: datetime
    updated_at: datetime
    #: Why the registry disabled it by itself (null: it did not).
    disabled_reason: str | None


class SubscriptionData(msgspec.Struct):
    data: SubscriptionView


class SubscriptionPage(Page[SubscriptionView]):
    data: list[SubscriptionView]
    next_cursor: str | None


class Secret(msgspec.Struct):
    secret: str


class SecretData(msgspec.Struct):
    data: Secret


class Pinged(msgspec.Struct):
    #: The id of the `waypost.subscription.ping` message (its `webhook-id`).
    message_id: str


class PingedData(msgspec.Struct):
    data: Pinged


class Queued(msgspec.Struct):
    queued: int


class QueuedData(msgspec.Struct):
    data: Queued


class Requeued(msgspec.Struct):
    requeued: int


class RequeuedData(msgspec.Struct):
    data: Requeued


class DeliveryView(msgspec.Struct, kw_only=True):
    id: str
    subscription_id: str
    message_id: str
    message_type: str
    position: int
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime


class AttemptView(msgspec.Struct, kw_only=True):
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str


class DeliveryWithAttempts(msgspec.Struct, kw_only=True):
    """A delivery as listed, with `attempts` the list of its attempts (not their count)."""

    id: str
    subscription_id: str
    message_id: str
    message_type: str
    position: int
    status: DeliveryStatus
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    #: Every attempt, oldest first.
    attempts: list[AttemptView]


class DeliveryPage(Page[DeliveryView]):
    data: list[DeliveryView]
    next_cursor: str | None


class DeliveryData(msgspec.Struct):
    data: DeliveryWithAttempts


def subscription_view(s: Subscription) -> SubscriptionView:
    return SubscriptionView(
        id=s.id,
        name=s.name,
        url=s.url,
        description=s.description,
        enabled=s.enabled,
        filter=s.filter,
        ordering=s.ordering,
        created_at=s.created_at,
        updated_at=s.updated_at,
        disabled_reason=s.disabled_reason,
    )


def delivery_view(d: Delivery) -> DeliveryView:
    return DeliveryView(
        id=d.id,
        subscription_id=d.subscription_id,
        message_id=d.message_id,
        message_type=d.message_type,
        position=d.position,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_attempt_at=d.last_attempt_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        created_at=d.created_at,
    )


def attempt_view(a: Attempt) -> AttemptView:
    return AttemptView(
        number=a.number,
        started_at=a.started_at,
        duration_ms=a.duration_ms,
        status_code=a.status_code,
        error=a.error,
        response_excerpt=a.response_excerpt,
    )


# --- routes ---------------------------------------------------------------------------------


@post(
    "/",
    opt=requires(Permission.SUBSCRIPTIONS_CREATE) | IDEMPOTENT,
    dto=Body[CreateSubscription],
    return_dto=None,
    summary="Create a subscription",
    description="Every message that matches `filter` (all, when it is empty) and is committed "
    "after now is POSTed to `url`, signed (Standard Webhooks). A URL the policy refuses "
    "(scheme, or a literal address in a refused network) is a 422.",
    response_headers=LOCATION,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def create_subscription(
    *, data: JSONBody[CreateSubscription], scope: Scope
) -> Response[IdData]:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    made = await services.subscriptions.create(actor, data, once(claim, _created))
    return created(f"{PATH}/{made.id}", made.id)


def _created(made: Subscription) -> Answer:
    return created_answer(f"{PATH}/{made.id}", made.id)


@get(
    "/",
    summary="List subscriptions",
    description="The tenant's subscriptions, newest first unless `order=asc`, by keyset pages "
    "(never their secrets: `GET .../secret` reads one, audited).",
    responses=problems(400, 401, 403),
    opt=requires(Permission.SUBSCRIPTIONS_READ),
)
async def list_subscriptions(
    *, limit: Limit = 50, cursor: Cursor = None, order: OrderParam = "desc", scope: Scope
) -> SubscriptionPage:
    services = services_of(scope)
    actor = actor_of(scope)
    page = page_request(KIND, limit, cursor, order)
    found = await services.subscriptions.list(actor, page)
    return page_of(
        KIND, found, limit=limit, order=order, view=subscription_view, page=SubscriptionPage
    )


@get(
    "/{subscription_id:str}",
    summary="Read a subscription",
    description="Its URL, filter, ordering, whether it is enabled and, when the registry "
    "disabled it, why (`disabled_reason`), and since when its deliveries fail.",
    responses=problems(401, 403, 404),
    opt=requires(Permission.SUBSCRIPTIONS_READ),
)
async def get_subscription(*, subscription_id: FromPath[str], scope: Scope) -> SubscriptionData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    return SubscriptionData(
        subscription_view(await services.subscriptions.get(actor, subscription_id))
    )


@patch(
    "/{subscription_id:str}",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    dto=Body[PatchSubscription],
    return_dto=None,
    summary="Change a subscription",
    description="Any of the create fields; those left out are unchanged. `enabled: true` on "
    "a disabled subscription clears `disabled_reason`: what waited is delivered.",
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def patch_subscription(
    *, subscription_id: FromPath[str], data: JSONBody[PatchSubscription], scope: Scope
) -> SubscriptionData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    changed = await services.subscriptions.patch(actor, subscription_id, data)
    return SubscriptionData(subscription_view(changed))


@delete(
    "/{subscription_id:str}",
    summary="Delete a subscription",
    description="Its deliveries stop; its delivery history goes with it.",
    responses=problems(401, 403, 404),
    opt=requires(Permission.SUBSCRIPTIONS_DELETE),
)
async def delete_subscription(*, subscription_id: FromPath[str], scope: Scope) -> None:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    await services.subscriptions.delete(actor, subscription_id)


@get(
    "/{subscription_id:str}/secret",
    summary="Read a subscription's signing secret",
    description="The `whsec_...` secret that signs its webhooks now (audited).",
    responses=problems(401, 403, 404),
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
)
async def get_secret(*, subscription_id: FromPath[str], scope: Scope) -> SecretData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    return SecretData(Secret(await services.subscriptions.secret(actor, subscription_id)))


@post(
    "/{subscription_id:str}/secret/rotate",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE) | IDEMPOTENT,
    dto=Body[RotateSecret],
    return_dto=None,
    status_code=200,
    summary="Rotate a subscription's signing secret",
    description="A new secret signs from now on; the old one keeps signing beside it "
    "(a second `v1,` entry) for `grace_seconds` (default one day), so receivers can switch.",
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def rotate_secret(
    *, subscription_id: FromPath[str], data: JSONBody[RotateSecret], scope: Scope
) -> Response[SecretData]:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    secret = await services.subscriptions.rotate(
        actor, subscription_id, data, once(claim, functools.partial(_rotated, subscription_id))
    )
    return Response(SecretData(Secret(secret)), headers={"Cache-Control": "no-store"})


def _rotated(subscription_id: str, _secret: str) -> Answer:
    """What a retry is told: that the secret was rotated and where to read it, never the
    secret."""
    where = f"{PATH}/{subscription_id}/secret"
    problem = Problem(
        type="urn:waypost:problem:secret-rotated",
        title="Secret rotated",
        status=409,
        detail="The first request with this Idempotency-Key rotated the secret. It is not "
        f"sent again: read the secret that signs now with GET {where}.",
        errors=[FieldError(HEADER, "rotated the secret already")],
    )
    return answer(409, problem, location=where, content_type=PROBLEM_JSON)


@post(
    "/{subscription_id:str}/ping",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE) | IDEMPOTENT,
    status_code=202,
    summary="Send a test message",
    description="A `waypost.subscription.ping` message, through the log and the same "
    "delivery as every message, to this subscription only (whatever its filter).",
    responses=problems(401, 403, 404, 409, 413, 422),
)
async def ping(*, subscription_id: FromPath[str], scope: Scope) -> PingedData:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    sent = await services.subscriptions.ping(actor, subscription_id, once(claim, _pinged))
    return PingedData(Pinged(sent))


def _pinged(message_id: str) -> Answer:
    return answer(202, PingedData(Pinged(message_id)))


@post(
    "/{subscription_id:str}/replay",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE) | IDEMPOTENT,
    dto=Body[Replay],
    return_dto=None,
    status_code=202,
    summary="Deliver older messages (again)",
    description="Every matching message after the log position `after` is delivered, "
    "again if it was already.",
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def replay(
    *, subscription_id: FromPath[str], data: JSONBody[Replay], scope: Scope
) -> QueuedData:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    queued = await services.subscriptions.replay(actor, subscription_id, data, once(claim, _queued))
    return QueuedData(Queued(queued))


def _queued(queued: int) -> Answer:
    return answer(202, QueuedData(Queued(queued)))


@post(
    "/{subscription_id:str}/redrive",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE) | IDEMPOTENT,
    dto=Body[Redrive],
    return_dto=None,
    status_code=202,
    summary="Send dead deliveries again",
    description="Dead deliveries of messages committed in [`since`, `until`) (both "
    "optional) go back to pending, with a whole retry schedule.",
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def redrive(
    *, subscription_id: FromPath[str], data: JSONBody[Redrive], scope: Scope
) -> RequeuedData:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    done = await services.subscriptions.redrive(
        actor, subscription_id, data, once(claim, _requeued)
    )
    return RequeuedData(Requeued(done))


def _requeued(requeued: int) -> Answer:
    return answer(202, RequeuedData(Requeued(requeued)))


@get(
    "/{subscription_id:str}/deliveries",
    summary="A subscription's deliveries",
    description="One delivery per message it gets, newest first unless `order=asc`; "
    "`status=dead` lists what `redrive` would send again.",
    responses=problems(400, 401, 403, 404),
    opt=requires(Permission.SUBSCRIPTIONS_READ),
)
async def list_deliveries(
    *,
    subscription_id: FromPath[str],
    status: Annotated[
        Literal["pending", "delivering", "succeeded", "dead"] | None,
        QueryParameter(description="Only deliveries in this state."),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
    scope: Scope,
) -> DeliveryPage:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    page = page_request(DELIVERIES, limit, cursor, order)
    wanted = None if status is None else DeliveryStatus(status)
    found = await services.subscriptions.deliveries(actor, subscription_id, wanted, page)
    return page_of(
        DELIVERIES, found, limit=limit, order=order, view=delivery_view, page=DeliveryPage
    )


@get(
    "/{subscription_id:str}/deliveries/{delivery_id:str}",
    summary="A delivery and its attempts",
    description="The delivery's state and every attempt made: when, the status code or why "
    "there was none, how long it took and the start of the target's answer.",
    responses=problems(401, 403, 404),
    opt=requires(Permission.SUBSCRIPTIONS_READ),
)
async def get_delivery(
    *, subscription_id: FromPath[str], delivery_id: FromPath[str], scope: Scope
) -> DeliveryData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(SUBSCRIPTION, subscription_id)
    check_id(DELIVERY, delivery_id)
    await services.subscriptions.get(actor, subscription_id)
    found, attempts = await services.subscriptions.delivery(actor, subscription_id, delivery_id)
    return DeliveryData(
        DeliveryWithAttempts(
            id=found.id,
            subscription_id=found.subscription_id,
            message_id=found.message_id,
            message_type=found.message_type,
            position=found.position,
            status=found.status,
            next_attempt_at=found.next_attempt_at,
            last_attempt_at=found.last_attempt_at,
            last_status_code=found.last_status_code,
            last_error=found.last_error,
            created_at=found.created_at,
            attempts=[attempt_view(a) for a in attempts],
        )
    )


HANDLERS = [
    create_subscription,
    list_subscriptions,
    get_subscription,
    patch_subscription,
    delete_subscription,
    get_secret,
    rotate_secret,
    ping,
    replay,
    redrive,
    list_deliveries,
    get_delivery,
]
