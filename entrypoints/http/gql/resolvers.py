"""Every field that reads or writes the registry: its permission and its resolver.

`FIELDS` is the whole table: `"Type.field" -> (Permission, resolver)`. Each
resolver calls the same use case as the REST route that does the same thing,
and asks the same permission (`Context.allow`); tenant scoping is the use
cases'. The schema refuses to build when a root field has no entry here, and the
permission test walks this table and the schema together: a new field without a
permission fails both.

EPR's searches (`events`, `event_receivers`, `event_receiver_groups`) return
every match in EPR; here at most `MAX_PAGE_SIZE`, the newest ones, oldest first
(EPR's clients read the last element as the latest). The `*_page` fields page
through everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec

from core.domain.access import Permission
from core.domain.commands import CreateGroup, PatchGroup, RecordEvent, RegisterReceiver
from core.domain.delivery import Attempt, Delivery, DeliveryStatus
from core.domain.errors import FieldError, Invalid, NotFound, raise_if
from core.domain.fields import check_name
from core.domain.ids import is_ulid
from core.domain.model import Event, Group, Nvrpp, Receiver
from core.domain.subscriptions import Subscription
from core.ports import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    CompletionFilter,
    EventFilter,
    GroupFilter,
    Order,
    PageRequest,
    ReceiverFilter,
)
from core.usecases.common import not_found
from entrypoints.http.gql.context import Context
from entrypoints.http.metrics import count_recorded
from entrypoints.http.paging import encode_cursor, page_request
from entrypoints.http.problems import BadRequest

__all__ = ["FIELDS", "Resolver"]

Resolver = Callable[[Context, Any, dict[str, Any]], Any]
FIELDS: dict[str, tuple[Permission, Resolver]] = {}

T = TypeVar("T")
_P = Permission
#: The REST lists' names: a cursor from one works in the other.
EVENTS, RECEIVERS, GROUPS, COMPLETIONS = "events", "receivers", "groups", "completions"
SUBSCRIPTIONS, DELIVERIES = "subscriptions", "deliveries"
#: How many attempts of a delivery GraphQL shows unless asked (`Delivery.attempts(limit)`).
DEFAULT_ATTEMPTS: Final = 20
_NVRPP: Final = ("name", "version", "release", "platform_id", "package")


def field(coordinate: str, permission: Permission) -> Callable[[Resolver], Resolver]:
    def register(resolver: Resolver) -> Resolver:
        assert coordinate not in FIELDS, coordinate
        FIELDS[coordinate] = (permission, resolver)
        return resolver

    return register


# --- helpers ---------------------------------------------------------------------------------


def _known(kind: str, ident: str) -> None:
    """Something that is not an id names nothing: not found before any store is asked."""
    if not is_ulid(ident):
        raise not_found(kind, ident)


def _matches(item: object, wanted: dict[str, Any]) -> bool:
    return all(value is None or getattr(item, name) == value for name, value in wanted.items())


async def _search(
    ctx: Context,
    given: dict[str, Any],
    get: Callable[[Any, str], Awaitable[T]],
    listing: Callable[[Any, Any, PageRequest], Awaitable[list[T]]],
    where: type[msgspec.Struct],
) -> list[T]:
    """EPR's search: exact matches of the given fields, ANDed; by id when an id is given."""
    wanted = dict(given)
    ident = wanted.pop("id", None)
    if ident is not None:
        if not is_ulid(ident):
            return []
        try:
            item = await get(ctx.actor, ident)
        except NotFound:
            return []
        return [item] if _matches(item, wanted) else []
    found = await listing(
        ctx.actor, msgspec.convert(wanted, where), PageRequest(limit=MAX_PAGE_SIZE, order="desc")
    )
    found.reverse()
    return found


async def _page(
    kind: str,
    args: dict[str, Any],
    fetch: Callable[[PageRequest], Awaitable[list[Any]]],
) -> dict[str, Any]:
    # An argument given as null means its default, as when it is left out.
    limit: int = DEFAULT_PAGE_SIZE if args.get("limit") is None else args["limit"]
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BadRequest(
            "The page size is out of range.",
            [FieldError("limit", f"must be 1 to {MAX_PAGE_SIZE}")],
        )
    order: Order = args.get("order") or "desc"
    found = await fetch(page_request(kind, limit, args.get("cursor"), order))
    next_cursor = None
    if len(found) > limit:  # one more than asked was fetched: more follow
        found = found[:limit]
        next_cursor = encode_cursor(kind, order, found[-1].id)
    return {"items": found, "next_cursor": next_cursor}


def _filter(args: dict[str, Any], cls: type[T]) -> T:
    return msgspec.convert(args.get("where") or {}, cls)


def _json_object(value: Any, pointer: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("The input is invalid.", [FieldError(pointer, "must be a JSON object")])
    return value


# --- EPR's queries ---------------------------------------------------------------------------


@field("Query.events_by_id", _P.EVENTS_READ)
async def events_by_id(ctx: Context, _: Any, args: dict[str, Any]) -> list[Event]:
    _known("event", args["id"])
    return [await ctx.services.events.get(ctx.actor, args["id"])]


@field("Query.event_receivers_by_id", _P.RECEIVERS_READ)
async def event_receivers_by_id(ctx: Context, _: Any, args: dict[str, Any]) -> list[Receiver]:
    _known("event receiver", args["id"])
    return [await ctx.services.receivers.get(ctx.actor, args["id"])]


@field("Query.event_receiver_groups_by_id", _P.GROUPS_READ)
async def event_receiver_groups_by_id(ctx: Context, _: Any, args: dict[str, Any]) -> list[Group]:
    _known("group", args["id"])
    return [await ctx.services.groups.get(ctx.actor, args["id"])]


@field("Query.events", _P.EVENTS_READ)
async def events(ctx: Context, _: Any, args: dict[str, Any]) -> list[Event]:
    service = ctx.services.events
    return await _search(ctx, args["event"], service.get, service.list, EventFilter)


@field("Query.event_receivers", _P.RECEIVERS_READ)
async def event_receivers(ctx: Context, _: Any, args: dict[str, Any]) -> list[Receiver]:
    service = ctx.services.receivers
    return await _search(ctx, args["event_receiver"], service.get, service.list, ReceiverFilter)


@field("Query.event_receiver_groups", _P.GROUPS_READ)
async def event_receiver_groups(ctx: Context, _: Any, args: dict[str, Any]) -> list[Group]:
    service = ctx.services.groups
    return await _search(ctx, args["event_receiver_group"], service.get, service.list, GroupFilter)


# --- beyond EPR: pages, gates, fingerprints --------------------------------------------------


@field("Query.events_page", _P.EVENTS_READ)
async def events_page(ctx: Context, _: Any, args: dict[str, Any]) -> dict[str, Any]:
    where = _filter(args, EventFilter)
    return await _page(EVENTS, args, lambda p: ctx.services.events.list(ctx.actor, where, p))


@field("Query.event_receivers_page", _P.RECEIVERS_READ)
async def event_receivers_page(ctx: Context, _: Any, args: dict[str, Any]) -> dict[str, Any]:
    where = _filter(args, ReceiverFilter)
    return await _page(RECEIVERS, args, lambda p: ctx.services.receivers.list(ctx.actor, where, p))


@field("Query.event_receiver_groups_page", _P.GROUPS_READ)
async def event_receiver_groups_page(ctx: Context, _: Any, args: dict[str, Any]) -> dict[str, Any]:
    where = _filter(args, GroupFilter)
    return await _page(GROUPS, args, lambda p: ctx.services.groups.list(ctx.actor, where, p))


@field("Query.event_receiver_group_status", _P.GROUPS_READ)
async def event_receiver_group_status(ctx: Context, _: Any, args: dict[str, Any]) -> Any:
    _known("group", args["id"])
    given: dict[str, str] = args["nvrpp"]
    errors: list[FieldError] = []
    for name in _NVRPP:
        check_name(errors, f"nvrpp/{name}", given[name])
    raise_if(errors, "The artifact is invalid")
    return await ctx.services.groups.status(ctx.actor, args["id"], Nvrpp(**given))


@field("Query.event_receiver_group_completions", _P.GROUPS_READ)
async def event_receiver_group_completions(
    ctx: Context, _: Any, args: dict[str, Any]
) -> dict[str, Any]:
    group_id: str = args["id"]
    _known("group", group_id)
    where = _filter(args, CompletionFilter)
    return await _page(
        COMPLETIONS,
        args,
        lambda p: ctx.services.groups.completions(ctx.actor, group_id, where, p),
    )


async def _by_fingerprint(ctx: Context, fingerprint: str) -> list[Receiver]:
    where = ReceiverFilter(fingerprint=fingerprint)
    return await ctx.services.receivers.list(ctx.actor, where, PageRequest(limit=MAX_PAGE_SIZE))


@field("Query.event_receivers_by_fingerprint", _P.RECEIVERS_READ)
async def event_receivers_by_fingerprint(
    ctx: Context, _: Any, args: dict[str, Any]
) -> list[Receiver]:
    return await _by_fingerprint(ctx, args["fingerprint"])


@field("Query.event_receiver_groups_by_fingerprint", _P.GROUPS_READ)
async def event_receiver_groups_by_fingerprint(
    ctx: Context, _: Any, args: dict[str, Any]
) -> list[Group]:
    receivers = await _by_fingerprint(ctx, args["fingerprint"])
    return await ctx.services.groups.containing(ctx.actor, [r.id for r in receivers])


# --- beyond EPR: webhooks (read; never a secret) ---------------------------------------------


@field("Query.subscriptions_by_id", _P.SUBSCRIPTIONS_READ)
async def subscriptions_by_id(ctx: Context, _: Any, args: dict[str, Any]) -> list[Subscription]:
    _known("subscription", args["id"])
    return [await ctx.services.subscriptions.get(ctx.actor, args["id"])]


@field("Query.subscriptions_page", _P.SUBSCRIPTIONS_READ)
async def subscriptions_page(ctx: Context, _: Any, args: dict[str, Any]) -> dict[str, Any]:
    return await _page(SUBSCRIPTIONS, args, lambda p: ctx.services.subscriptions.list(ctx.actor, p))


def _delivery(d: Delivery) -> dict[str, Any]:
    """A delivery as the schema shows it (its attempts counted; no body, no lease)."""
    return {
        "id": d.id,
        "subscription_id": d.subscription_id,
        "message_id": d.message_id,
        "message_type": d.message_type,
        "position": str(d.position),
        "status": d.status,
        "attempt_count": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_attempt_at": d.last_attempt_at,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": d.created_at,
    }


@field("Query.subscription_deliveries", _P.SUBSCRIPTIONS_READ)
async def subscription_deliveries(ctx: Context, _: Any, args: dict[str, Any]) -> dict[str, Any]:
    subscription_id: str = args["id"]
    _known("subscription", subscription_id)
    status = None if args.get("status") is None else DeliveryStatus(args["status"])
    service = ctx.services.subscriptions
    found = await _page(
        DELIVERIES, args, lambda p: service.deliveries(ctx.actor, subscription_id, status, p)
    )
    return {**found, "items": [_delivery(d) for d in found["items"]]}


@field("Query.subscription_delivery", _P.SUBSCRIPTIONS_READ)
async def subscription_delivery(ctx: Context, _: Any, args: dict[str, Any]) -> dict[str, Any]:
    subscription_id: str = args["id"]
    _known("subscription", subscription_id)
    _known("delivery", args["delivery_id"])
    service = ctx.services.subscriptions
    await service.get(ctx.actor, subscription_id)
    found, _ = await service.delivery(ctx.actor, subscription_id, args["delivery_id"])
    return _delivery(found)


@field("Delivery.attempts", _P.SUBSCRIPTIONS_READ)
async def delivery_attempts(ctx: Context, parent: dict[str, Any], args: dict[str, Any]) -> Any:
    """Batch loaded: the attempts of a page of deliveries are one read."""
    limit = DEFAULT_ATTEMPTS if args.get("limit") is None else args["limit"]
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BadRequest(
            "The number of attempts is out of range.",
            [FieldError("limit", f"must be 1 to {MAX_PAGE_SIZE}")],
        )
    attempts: list[Attempt] = await ctx.attempts.load(parent["id"])
    return attempts[-limit:]


# --- nested: batch loaded --------------------------------------------------------------------


@field("Event.event_receiver", _P.RECEIVERS_READ)
def event_receiver(ctx: Context, parent: Event, _: dict[str, Any]) -> Awaitable[Receiver]:
    return ctx.receivers.load(parent.event_receiver_id)


@field("EventReceiverGroup.event_receivers", _P.RECEIVERS_READ)
def group_receivers(ctx: Context, parent: Group, _: dict[str, Any]) -> Awaitable[list[Receiver]]:
    return asyncio.gather(*(ctx.receivers.load(i) for i in parent.event_receiver_ids))


# --- EPR's mutations -------------------------------------------------------------------------


@field("Mutation.create_event", _P.EVENTS_CREATE)
async def create_event(ctx: Context, _: Any, args: dict[str, Any]) -> str:
    given = dict(args["event"])
    given["payload"] = _json_object(given["payload"], "/payload")
    outcome = await ctx.services.events.record_outcome(
        ctx.actor, msgspec.convert(given, RecordEvent)
    )
    if ctx.scope is not None:
        count_recorded(ctx.scope, outcome)
    return outcome.events[0].id


@field("Mutation.create_event_receiver", _P.RECEIVERS_CREATE)
async def create_event_receiver(ctx: Context, _: Any, args: dict[str, Any]) -> str:
    given = dict(args["event_receiver"])
    given["schema"] = _json_object(given["schema"], "/schema")
    receiver, _ = await ctx.services.receivers.register(
        ctx.actor, msgspec.convert(given, RegisterReceiver)
    )
    return receiver.id


@field("Mutation.create_event_receiver_group", _P.GROUPS_CREATE)
async def create_event_receiver_group(ctx: Context, _: Any, args: dict[str, Any]) -> str:
    cmd = msgspec.convert(args["event_receiver_group"], CreateGroup)
    return (await ctx.services.groups.create(ctx.actor, cmd)).id


async def _set_enabled(ctx: Context, group_id: str, enabled: bool) -> str:
    _known("group", group_id)
    await ctx.services.groups.patch(ctx.actor, group_id, PatchGroup(enabled=enabled))
    return group_id


@field("Mutation.set_event_receiver_group_enabled", _P.GROUPS_UPDATE)
async def set_event_receiver_group_enabled(ctx: Context, _: Any, args: dict[str, Any]) -> str:
    return await _set_enabled(ctx, args["id"], True)


@field("Mutation.set_event_receiver_group_disabled", _P.GROUPS_UPDATE)
async def set_event_receiver_group_disabled(ctx: Context, _: Any, args: dict[str, Any]) -> str:
    return await _set_enabled(ctx, args["id"], False)
