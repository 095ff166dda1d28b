"""Subscriptions: a tenant's standing order to POST every matching message to a URL.

Rules
    `name` non-blank, at most 255 characters; `description` at most 4096. `url` as the
    URL policy says (below). `filter`: every part optional, parts ANDed, an empty
    filter matches every message: `types` (message types, any of), `subjects`
    (receiver, group or subscription ids, any of), the five NVRPP fields (exact) and
    `success`. A list given is 1 to 100 distinct, non-blank items of at most 255
    characters (subjects: ids). `ordering`: `none` (default) or `artifact`.

The URL policy (checked when a URL is saved)
    An absolute `https` URL (`http` too where the policy allows it: development),
    ASCII, at most 2048 characters, with a host, without credentials or a fragment.
    A host that is an IP address literal (in any form a resolver accepts:
    `2130706433` is 127.0.0.1) in a network the address guard refuses is refused
    here already, with the guard's reason (`core.domain.addresses`). A host *name*
    is only judged at connection time, on what it resolves to then: that is the
    guard that counts (adapters/webhooks).

Which messages a subscription gets (`wants`)
    The messages committed to its tenant's log after its creation (`start_position`)
    that its filter matches; a `waypost.subscription.ping` goes to the subscription it
    names only, and to it whatever its filter says.

Pure: the ids and times are arguments.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import msgspec

from core.domain import addresses
from core.domain.errors import FieldError, raise_if
from core.domain.fields import check_description, check_name
from core.domain.ids import is_ulid
from core.domain.messages import TYPE_SUBSCRIPTION_DISABLED, TYPE_SUBSCRIPTION_PING, CloudEvent

__all__ = [
    "MAX_FILTER_ITEMS",
    "MAX_URL_LENGTH",
    "TYPE_SUBSCRIPTION_DISABLED",
    "TYPE_SUBSCRIPTION_PING",
    "Ordering",
    "Subscription",
    "SubscriptionFilter",
    "UrlPolicy",
    "check_filter",
    "check_url",
    "matches",
    "new_subscription",
    "ordering_key",
    "patched",
    "recipients",
    "secret_name",
    "wants",
]

MAX_URL_LENGTH: Final = 2048
MAX_FILTER_ITEMS: Final = 100

Ordering = Literal["none", "artifact"]


class SubscriptionFilter(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Which messages a subscription wants: every part given must match (None: any)."""

    types: tuple[str, ...] | None = None
    subjects: tuple[str, ...] | None = None
    name: str | None = None
    version: str | None = None
    release: str | None = None
    platform_id: str | None = None
    package: str | None = None
    success: bool | None = None


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    url: str
    description: str
    enabled: bool
    filter: SubscriptionFilter
    ordering: Ordering
    created_at: datetime
    updated_at: datetime
    #: Why the registry disabled it by itself (None: it did not; a person may have).
    disabled_reason: str | None = None
    #: The tenant's log position when it was created: it gets the messages after it.
    start_position: int = 0
    #: Since when its deliveries fail with no success in between (None: not failing).
    failing_since: datetime | None = None
    #: Times the registry disabled it, and how many of those its tenant's log announced
    #: (a `waypost.subscription.disabled` message each).
    disables: int = 0
    announced: int = 0


@dataclass(frozen=True)
class UrlPolicy:
    """Which target URLs may be saved: `https` only unless `allow_http`; literal addresses
    in refused networks refused unless in `allowed`."""

    allow_http: bool = False
    allowed: tuple[addresses.Network, ...] = ()


# RFC 3986, appendix B: scheme, authority, path, query, fragment.
_URL = re.compile(r"^(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$", re.S)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?"
)
_PORT = re.compile(r"[0-9]{1,5}")
_MAX_PORT = 65535


def check_url(  # noqa: PLR0911 - one refusal per rule, in order
    errors: list[FieldError], field: str, url: str, policy: UrlPolicy
) -> None:
    """The URL policy (module docstring); one error at most, the first thing wrong."""

    def refuse(message: str) -> None:
        errors.append(FieldError(field, message))

    if not url or len(url) > MAX_URL_LENGTH:
        return refuse(f"must be 1 to {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return refuse("must be ASCII without spaces or control characters (IDNA-encode names)")
    found = _URL.match(url)
    assert found is not None  # the pattern matches every string
    scheme, authority, _path, _query, fragment = found.groups()
    if scheme is None or not _SCHEME.fullmatch(scheme) or authority is None:
        return refuse("must be an absolute URL (https://host/path)")
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        return refuse("must be an https URL")
    if scheme == "http" and not policy.allow_http:
        return refuse("must be an https URL (plain http is allowed in development only)")
    if fragment is not None:
        return refuse("must not have a fragment (#...)")
    if "@" in authority:
        return refuse("must not carry credentials (user:password@)")
    host, port = _split_authority(authority)
    if port is not None and (not _PORT.fullmatch(port) or not 1 <= int(port) <= _MAX_PORT):
        return refuse("has an invalid port")
    if not host:
        return refuse("must name a host")
    literal = addresses.literal_address(host)
    if literal is not None:
        reason = addresses.refusal(literal, policy.allowed)
        if reason is not None:
            return refuse(
                f"names the address {literal}, which webhooks may not reach: {reason} "
                "(an operator may allow its network: delivery.allowed_networks)"
            )
        return None
    if host.startswith("[") or not _HOST_NAME.fullmatch(host):
        return refuse("has an invalid host")
    return None


def _split_authority(authority: str) -> tuple[str, str | None]:
    """(host, port or None) of an authority without userinfo."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return authority, None
        rest = authority[end + 1 :]
        if rest.startswith(":"):
            return authority[: end + 1], rest[1:]
        return authority[: end + 1], (rest or None)
    host, colon, port = authority.partition(":")
    return host, (port if colon else None)


def secret_name(subscription_id: str) -> str:
    """The name its signing secret's versions are sealed under (bound into each envelope)."""
    return f"subscription:{subscription_id}"


def _check_items(
    errors: list[FieldError], field: str, items: Sequence[str] | None, *, ids: bool
) -> None:
    if items is None:
        return
    if not 1 <= len(items) <= MAX_FILTER_ITEMS:
        errors.append(
            FieldError(field, f"lists 1 to {MAX_FILTER_ITEMS} items (leave it out to match any)")
        )
        return
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"{field}/{index}"
        if ids and not is_ulid(item):
            errors.append(
                FieldError(where, "must be an id (a receiver's, group's or subscription's)")
            )
        else:
            check_name(errors, where, item)
        if item in seen:
            errors.append(FieldError(where, f"{item!r} is listed twice"))
        seen.add(item)


def check_filter(errors: list[FieldError], field: str, where: SubscriptionFilter) -> None:
    _check_items(errors, f"{field}/types", where.types, ids=False)
    _check_items(errors, f"{field}/subjects", where.subjects, ids=True)
    for name in ("name", "version", "release", "platform_id", "package"):
        value = getattr(where, name)
        if value is not None:
            check_name(errors, f"{field}/{name}", value)


def new_subscription(
    *,
    id: str,
    tenant_id: str,
    name: str,
    url: str,
    description: str,
    enabled: bool,
    filter: SubscriptionFilter,
    ordering: Ordering,
    now: datetime,
    policy: UrlPolicy,
) -> Subscription:
    """A new subscription after checking its fields; Invalid lists everything wrong."""
    errors: list[FieldError] = []
    check_name(errors, "/name", name)
    check_description(errors, "/description", description)
    check_url(errors, "/url", url, policy)
    check_filter(errors, "/filter", filter)
    raise_if(errors, "The subscription is invalid")
    return Subscription(
        id=id,
        tenant_id=tenant_id,
        name=name,
        url=url,
        description=description,
        enabled=enabled,
        filter=filter,
        ordering=ordering,
        created_at=now,
        updated_at=now,
    )


def patched(
    subscription: Subscription,
    *,
    name: str | None = None,
    url: str | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    filter: SubscriptionFilter | None = None,
    ordering: Ordering | None = None,
    now: datetime,
    policy: UrlPolicy,
) -> Subscription:
    """The subscription with the given fields changed (None: unchanged), or itself when
    nothing changes. Enabling it clears `disabled_reason` and its failing streak (it gets
    a fresh `disable_after` before it can be disabled again)."""
    errors: list[FieldError] = []
    if name is not None:
        check_name(errors, "/name", name)
    if description is not None:
        check_description(errors, "/description", description)
    if url is not None:
        check_url(errors, "/url", url, policy)
    if filter is not None:
        check_filter(errors, "/filter", filter)
    raise_if(errors, "The subscription change is invalid")
    given = {
        "name": name,
        "url": url,
        "description": description,
        "filter": filter,
        "ordering": ordering,
    }
    changes: dict[str, object] = {
        field: value
        for field, value in given.items()
        if value is not None and value != getattr(subscription, field)
    }
    if enabled is not None and enabled != subscription.enabled:
        changes["enabled"] = enabled
    if enabled and (subscription.disabled_reason is not None or not subscription.enabled):
        changes.update(enabled=True, disabled_reason=None, failing_since=None)
    if not changes:
        return subscription
    return msgspec.structs.replace(subscription, updated_at=now, **changes)


def matches(where: SubscriptionFilter, message: CloudEvent) -> bool:
    """Whether every part of the filter that is given matches the message."""
    return (
        (where.types is None or message.type in where.types)
        and (where.subjects is None or message.subject in where.subjects)
        and (where.name is None or message.eventname == where.name)
        and (where.version is None or message.eventversion == where.version)
        and (where.release is None or message.release == where.release)
        and (where.platform_id is None or message.platformid == where.platform_id)
        and (where.package is None or message.package == where.package)
        and (where.success is None or message.success == where.success)
    )


def wants(subscription: Subscription, message: CloudEvent, position: int) -> bool:
    """Whether the subscription gets the message at `position` of its tenant's log."""
    if position <= subscription.start_position:
        return False
    if message.type == TYPE_SUBSCRIPTION_PING:
        return message.subject == subscription.id
    return matches(subscription.filter, message)


def recipients(
    subscriptions: Iterable[Subscription], message: CloudEvent, position: int
) -> list[Subscription]:
    """The subscriptions (enabled or not: a disabled one's deliveries wait) that get it."""
    return [s for s in subscriptions if wants(s, message, position)]


def ordering_key(subscription: Subscription, message: CloudEvent) -> str | None:
    """Ordering `artifact`: the artifact the message is about (a digest of its NVRPP), which
    the deliveries of one key keep the log order in; None when there is no order to keep."""
    if subscription.ordering != "artifact":
        return None
    parts = (message.eventname, message.eventversion, message.release, message.platformid,
             message.package)  # fmt: skip
    if any(part is None for part in parts):
        return None
    text = "\x00".join(p or "" for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()
