"""Every route of the HTTP contract (API.md) as a `Call` or `PageCall`; the clients send them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from waypost_client._core import Call, PageCall, body, data_of, query
from waypost_client.models import (
    ApiKey,
    Completion,
    Delivery,
    Event,
    Group,
    GroupStatus,
    NewApiKey,
    Nvrpp,
    Receiver,
    Subscription,
    Tenant,
    Token,
    User,
)

API = "/api/v1"
MAX_BATCH = 1000


def _seg(value: str) -> str:
    """A path segment, escaped (an id typed by hand never reaches another route)."""
    return quote(value, safe="")


def _id(answer: Any) -> str:
    return str(data_of(answer))


def _ids(answer: Any) -> list[str]:
    return [str(i) for i in data_of(answer)]


def _none(_answer: Any) -> None:
    return None


def _raw(answer: Any) -> Any:
    return answer


def _time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def _page(
    path: str, item: Any, *, limit: int | None, order: str | None, **filters: Any
) -> PageCall[Any]:
    return PageCall(path, item, query(limit=limit, order=order, **filters))


# --- tenants ----------------------------------------------------------------------------------


def create_tenant(slug: str, name: str) -> Call[str]:
    return Call("POST", f"{API}/tenants", _id, json={"slug": slug, "name": name})


def get_tenant(slug: str) -> Call[Tenant]:
    return Call("GET", f"{API}/tenants/{_seg(slug)}", lambda a: Tenant.from_json(data_of(a)))


def list_tenants(limit: int | None, order: str | None) -> PageCall[Tenant]:
    return _page(f"{API}/tenants", Tenant.from_json, limit=limit, order=order)


def update_tenant(slug: str, name: str | None, disabled: bool | None) -> Call[Tenant]:
    return Call(
        "PATCH",
        f"{API}/tenants/{_seg(slug)}",
        lambda a: Tenant.from_json(data_of(a)),
        json=body(name=name, disabled=disabled),
    )


# --- receivers --------------------------------------------------------------------------------


def create_receiver(
    name: str, type: str, version: str, description: str, schema: Mapping[str, Any] | None
) -> Call[str]:
    fields = {
        "name": name,
        "type": type,
        "version": version,
        "description": description,
        "schema": dict(schema) if schema is not None else {},
    }
    return Call("POST", f"{API}/receivers", _id, json=fields)


def get_receiver(receiver_id: str) -> Call[Receiver]:
    return Call(
        "GET", f"{API}/receivers/{_seg(receiver_id)}", lambda a: Receiver.from_json(data_of(a))
    )


def list_receivers(
    name: str | None, type: str | None, version: str | None, limit: int | None, order: str | None
) -> PageCall[Receiver]:
    return _page(
        f"{API}/receivers",
        Receiver.from_json,
        limit=limit,
        order=order,
        name=name,
        type=type,
        version=version,
    )


# --- events -----------------------------------------------------------------------------------


def event_body(
    *,
    name: str,
    version: str,
    release: str,
    platform_id: str,
    package: str,
    event_receiver_id: str,
    success: bool,
    payload: Mapping[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """The body of one event (for `create_events`)."""
    return {
        "name": name,
        "version": version,
        "release": release,
        "platform_id": platform_id,
        "package": package,
        "description": description,
        "payload": dict(payload) if payload is not None else {},
        "success": success,
        "event_receiver_id": event_receiver_id,
    }


def create_event(fields: dict[str, Any]) -> Call[str]:
    return Call("POST", f"{API}/events", _id, json=fields)


def create_events(events: Sequence[Mapping[str, Any]]) -> Call[list[str]]:
    if not 1 <= len(events) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} events, not {len(events)}")
    return Call("POST", f"{API}/events/batch", _ids, json={"events": [dict(e) for e in events]})


def get_event(event_id: str) -> Call[Event]:
    return Call("GET", f"{API}/events/{_seg(event_id)}", lambda a: Event.from_json(data_of(a)))


def list_events(filters: dict[str, Any], limit: int | None, order: str | None) -> PageCall[Event]:
    filters = {k: _time(v) if isinstance(v, datetime) else v for k, v in filters.items()}
    return _page(f"{API}/events", Event.from_json, limit=limit, order=order, **filters)


# --- groups -----------------------------------------------------------------------------------


def create_group(
    *,
    name: str,
    type: str,
    version: str,
    event_receiver_ids: Sequence[str],
    description: str,
    enabled: bool | None,
) -> Call[str]:
    fields = body(
        name=name,
        type=type,
        version=version,
        description=description,
        enabled=enabled,
        event_receiver_ids=list(event_receiver_ids),
    )
    return Call("POST", f"{API}/groups", _id, json=fields)


def get_group(group_id: str) -> Call[Group]:
    return Call("GET", f"{API}/groups/{_seg(group_id)}", lambda a: Group.from_json(data_of(a)))


def list_groups(
    *,
    name: str | None,
    type: str | None,
    version: str | None,
    enabled: bool | None,
    limit: int | None,
    order: str | None,
) -> PageCall[Group]:
    return _page(
        f"{API}/groups",
        Group.from_json,
        limit=limit,
        order=order,
        name=name,
        type=type,
        version=version,
        enabled=enabled,
    )


def update_group(
    group_id: str,
    enabled: bool | None,
    description: str | None,
    add_receiver_ids: Sequence[str] | None,
    remove_receiver_ids: Sequence[str] | None,
) -> Call[Group]:
    fields = body(
        enabled=enabled,
        description=description,
        add_receiver_ids=None if add_receiver_ids is None else list(add_receiver_ids),
        remove_receiver_ids=None if remove_receiver_ids is None else list(remove_receiver_ids),
    )
    return Call(
        "PATCH",
        f"{API}/groups/{_seg(group_id)}",
        lambda a: Group.from_json(data_of(a)),
        json=fields,
    )


def delete_group(group_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/groups/{_seg(group_id)}", _none)


def group_status(group_id: str, key: Nvrpp, wait: int | None) -> Call[GroupStatus]:
    if wait is not None and not 1 <= wait <= 60:
        raise ValueError("wait is 1 to 60 seconds")
    return Call(
        "GET",
        f"{API}/groups/{_seg(group_id)}/status",
        lambda a: GroupStatus.from_json(data_of(a)),
        params=query(**key.params(), wait=wait),
        extra_time=float(wait or 0),
    )


def list_completions(
    group_id: str, filters: dict[str, Any], limit: int | None, order: str | None
) -> PageCall[Completion]:
    return _page(
        f"{API}/groups/{_seg(group_id)}/completions",
        Completion.from_json,
        limit=limit,
        order=order,
        **filters,
    )


# --- messages ---------------------------------------------------------------------------------


def messages_params(
    after: int | None, follow: bool, types: Sequence[str], subjects: Sequence[str]
) -> dict[str, Any]:
    return query(after=after, follow=follow, type=list(types), subject=list(subjects))


MESSAGES = f"{API}/messages"


# --- subscriptions ----------------------------------------------------------------------------


def create_subscription(fields: dict[str, Any]) -> Call[str]:
    return Call("POST", f"{API}/subscriptions", _id, json=fields)


def get_subscription(subscription_id: str) -> Call[Subscription]:
    return Call(
        "GET",
        f"{API}/subscriptions/{_seg(subscription_id)}",
        lambda a: Subscription.from_json(data_of(a)),
    )


def list_subscriptions(limit: int | None, order: str | None) -> PageCall[Subscription]:
    return _page(f"{API}/subscriptions", Subscription.from_json, limit=limit, order=order)


def update_subscription(subscription_id: str, fields: dict[str, Any]) -> Call[Subscription]:
    return Call(
        "PATCH",
        f"{API}/subscriptions/{_seg(subscription_id)}",
        lambda a: Subscription.from_json(data_of(a)),
        json=fields,
    )


def delete_subscription(subscription_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/subscriptions/{_seg(subscription_id)}", _none)


def subscription_secret(subscription_id: str) -> Call[str]:
    return Call(
        "GET",
        f"{API}/subscriptions/{_seg(subscription_id)}/secret",
        lambda a: str(data_of(a)["secret"]),
    )


def rotate_subscription_secret(subscription_id: str, grace_seconds: int | None) -> Call[str]:
    return Call(
        "POST",
        f"{API}/subscriptions/{_seg(subscription_id)}/secret/rotate",
        lambda a: str(data_of(a)["secret"]),
        json=body(grace_seconds=grace_seconds),
    )


def list_deliveries(
    subscription_id: str, status: str | None, limit: int | None, order: str | None
) -> PageCall[Delivery]:
    return _page(
        f"{API}/subscriptions/{_seg(subscription_id)}/deliveries",
        Delivery.from_json,
        limit=limit,
        order=order,
        status=status,
    )


def get_delivery(subscription_id: str, delivery_id: str) -> Call[Delivery]:
    return Call(
        "GET",
        f"{API}/subscriptions/{_seg(subscription_id)}/deliveries/{_seg(delivery_id)}",
        lambda a: Delivery.from_json(data_of(a)),
    )


def redrive(
    subscription_id: str, since: datetime | str | None, until: datetime | str | None
) -> Call[int]:
    return Call(
        "POST",
        f"{API}/subscriptions/{_seg(subscription_id)}/redrive",
        lambda a: int(data_of(a)["requeued"]),
        json=body(since=_time(since), until=_time(until)),
    )


def replay(subscription_id: str, after: int) -> Call[int]:
    return Call(
        "POST",
        f"{API}/subscriptions/{_seg(subscription_id)}/replay",
        lambda a: int(data_of(a)["queued"]),
        json={"after": after},
    )


def ping(subscription_id: str) -> Call[None]:
    return Call("POST", f"{API}/subscriptions/{_seg(subscription_id)}/ping", _none, json={})


# --- identity ---------------------------------------------------------------------------------


def token(grant: dict[str, Any]) -> Call[Token]:
    return Call("POST", f"{API}/auth/token", Token.from_json, json=grant, authenticated=False)


def revoke_token(text: str) -> Call[None]:
    return Call("POST", f"{API}/auth/revoke", _none, json={"token": text}, authenticated=False)


def jwks() -> Call[dict[str, Any]]:
    return Call("GET", "/.well-known/jwks.json", _raw, authenticated=False)


def create_api_key(name: str, role: str, expires_at: datetime | str | None) -> Call[NewApiKey]:
    def made(answer: Any) -> NewApiKey:
        data = data_of(answer)
        return NewApiKey(id=str(data["id"]), key=str(data["key"]))

    return Call(
        "POST",
        f"{API}/api-keys",
        made,
        json=body(name=name, role=role, expires_at=_time(expires_at)),
    )


def get_api_key(key_id: str) -> Call[ApiKey]:
    return Call("GET", f"{API}/api-keys/{_seg(key_id)}", lambda a: ApiKey.from_json(data_of(a)))


def list_api_keys(limit: int | None, order: str | None) -> PageCall[ApiKey]:
    return _page(f"{API}/api-keys", ApiKey.from_json, limit=limit, order=order)


def delete_api_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/api-keys/{_seg(key_id)}", _none)


def create_user(username: str, password: str, roles: Sequence[str]) -> Call[str]:
    return Call(
        "POST",
        f"{API}/users",
        _id,
        json={"username": username, "password": password, "roles": list(roles)},
    )


def get_user(user_id: str) -> Call[User]:
    return Call("GET", f"{API}/users/{_seg(user_id)}", lambda a: User.from_json(data_of(a)))


def list_users(limit: int | None, order: str | None) -> PageCall[User]:
    return _page(f"{API}/users", User.from_json, limit=limit, order=order)


def update_user(
    user_id: str, roles: Sequence[str] | None, disabled: bool | None, password: str | None
) -> Call[User]:
    fields = body(
        roles=None if roles is None else list(roles), disabled=disabled, password=password
    )
    return Call(
        "PATCH", f"{API}/users/{_seg(user_id)}", lambda a: User.from_json(data_of(a)), json=fields
    )


def delete_user(user_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/users/{_seg(user_id)}", _none)


# --- operations -------------------------------------------------------------------------------


def live() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz/live", _raw, authenticated=False)


def ready() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz/ready", _raw, authenticated=False, retry=False)
