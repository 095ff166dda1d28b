"""`Client`: the synchronous SDK. Every route of the HTTP contract is a method.

```python
with Client() as waypost:  # WAYPOST_URL, WAYPOST_API_KEY
    status = waypost.wait_for_gate(group_id, Nvrpp("app", "1.0", "1", "linux", "rpm"),
                                   timeout=600)
```

Lists return iterators that fetch the next page (`next_cursor`) as they are consumed.
Errors are `waypost_client.errors` exceptions. Connection errors, 429 and 503 are
retried within the `RetryPolicy`'s budget; every POST carries one Idempotency-Key
for all of its attempts. `AsyncClient` (waypost_client.aio) has the same methods.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from waypost_client import _api as api
from waypost_client._core import (
    Attempts,
    Call,
    Config,
    Credentials,
    PageCall,
    RetryPolicy,
    SseParser,
    body,
    decode_answer,
    error_of,
    new_idempotency_key,
    request_headers,
)
from waypost_client.errors import ApiError, ConnectionFailed, GateTimeout, NotFound
from waypost_client.models import (
    ApiKey,
    Completion,
    Delivery,
    Event,
    Group,
    GroupStatus,
    Message,
    NewApiKey,
    Nvrpp,
    Receiver,
    Subscription,
    Tenant,
    Token,
    User,
)

__all__ = ["Client"]

T = TypeVar("T")

#: Read timeout of the live tail: longer than the server's keep-alive comments (15 s).
STREAM_READ_TIMEOUT = 60.0


class Client:
    """A synchronous Waypost client (see the module's docstring).

    `url` and `api_key` default to WAYPOST_URL and WAYPOST_API_KEY; `username` and
    `password` (WAYPOST_USERNAME, WAYPOST_PASSWORD, with `tenant`: WAYPOST_TENANT) log in
    instead and keep the access token fresh. `act_as` sends `X-Tenant` (platform
    administrators). `transport` replaces httpx's (tests, proxies).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tenant: str | None = None,
        act_as: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        config: Config | None = None,
    ) -> None:
        self.config = config or Config.load(
            url,
            api_key,
            username=username,
            password=password,
            tenant=tenant,
            act_as=act_as,
            timeout=timeout,
        )
        self.retry = retry or RetryPolicy()
        self._credentials = Credentials(self.config)
        self._rng = random.Random()  # noqa: S311 - jitter, not secrets
        self._http = httpx.Client(
            base_url=self.config.url, timeout=self.config.timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- sending ------------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        key = new_idempotency_key() if call.method == "POST" else None
        attempts = Attempts(self.retry, call.method, self._rng)
        relogged = False
        while True:
            attempts.number += 1
            try:
                if call.authenticated and self._credentials.needs_token():
                    self._credentials.accept(self._run(self._credentials.token_call()))
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    headers=request_headers(call, self._credentials, key),
                    timeout=self.config.timeout + call.extra_time,
                )
                if (
                    response.status_code == 401
                    and call.authenticated
                    and self._credentials.uses_password
                    and not relogged
                ):
                    relogged = True  # the token was revoked or the server restarted: log in
                    self._credentials.forget()
                    attempts.number -= 1
                    continue
                return call.decode(decode_answer(response))
            except (ApiError, httpx.TransportError) as exc:
                delay = attempts.next_delay_after_error(exc) if call.retry else None
                if delay is None:
                    if isinstance(exc, httpx.TransportError):
                        raise ConnectionFailed(
                            f"{call.method} {call.path}: {type(exc).__name__}: {exc} "
                            f"(after {attempts.number} attempt(s))"
                        ) from exc
                    raise
                time.sleep(delay)

    def _pages(self, call: PageCall[T]) -> Iterator[T]:
        cursor: str | None = None
        while True:
            params = dict(call.params)
            if cursor is not None:
                params["cursor"] = cursor
            page = self._run(Call("GET", call.path, lambda a: a, params=params))
            for item in page["data"]:
                yield call.item(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # --- references -------------------------------------------------------------------------

    def find_receiver(self, ref: str) -> Receiver:
        """A receiver by id, or by `name@version` (NotFound when none, ValueError when
        several receivers of different types share that name and version)."""
        found: Receiver = _one(ref, "receiver", self.get_receiver, self.list_receivers)
        return found

    def find_group(self, ref: str) -> Group:
        """A group by id, or by `name@version` (as `find_receiver`)."""
        found: Group = _one(ref, "group", self.get_group, self.list_groups)
        return found

    # --- the long poll ----------------------------------------------------------------------

    def wait_for_gate(
        self, group_id: str, key: Nvrpp, *, timeout: float, poll: int = 60
    ) -> GroupStatus:
        """Wait until the gate is complete for the artifact (long polls of at most `poll`
        seconds); its status. Raises `GateTimeout` (with the last status) after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = max(1, min(poll, 60, math.floor(remaining))) if remaining >= 1 else None
            status = self.group_status(group_id, key, wait=wait)
            if status.complete:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GateTimeout(f"group {group_id} is not complete after {timeout:g} s", status)
            if wait is None:
                time.sleep(remaining)

    # --- the live tail ----------------------------------------------------------------------

    def messages(
        self,
        after: int | None = None,
        *,
        follow: bool = False,
        types: Sequence[str] = (),
        subjects: Sequence[str] = (),
    ) -> Iterator[Message]:
        """The tenant's messages after log position `after` (None: from now on), as they
        come with `follow`. One connection; `Watcher` reconnects, resumes and checkpoints."""
        for message in self._tail(after, follow=follow, types=types, subjects=subjects):
            if message is not None:
                yield message

    def _tail(
        self,
        after: int | None,
        *,
        follow: bool,
        types: Sequence[str],
        subjects: Sequence[str],
    ) -> Iterator[Message | None]:
        """The messages, and None for each keep-alive the server sends while idle (every
        15 s), so that a follower can act on a stop between messages."""
        headers = request_headers(Call("GET", api.MESSAGES, lambda a: a), self._credentials, None)
        headers["Accept"] = "text/event-stream"
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        if self._credentials.needs_token():
            self._credentials.accept(self._run(self._credentials.token_call()))
            headers.update(self._credentials.header())
        params = api.messages_params(None, follow, types, subjects)
        timeout = httpx.Timeout(self.config.timeout, read=STREAM_READ_TIMEOUT)
        with self._http.stream(
            "GET", api.MESSAGES, params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            parser = SseParser()
            for line in response.iter_lines():
                if line.startswith(":"):
                    yield None  # a keep-alive
                    continue
                event = parser.feed(line)
                if event is not None and event.id is not None:
                    yield Message.from_json(int(event.id), _json("\n".join(event.data)))

    # --- API ------------------------------------------------------------------------------
    # Generated into waypost_client.aio by tools: keep each method a single `return`.

    def create_tenant(self, slug: str, name: str) -> str:
        """Create a tenant (platform administrators); its slug."""
        return self._run(api.create_tenant(slug, name))

    def get_tenant(self, slug: str) -> Tenant:
        return self._run(api.get_tenant(slug))

    def list_tenants(
        self, *, limit: int | None = None, order: str | None = None
    ) -> Iterator[Tenant]:
        return self._pages(api.list_tenants(limit, order))

    def update_tenant(
        self, slug: str, *, name: str | None = None, disabled: bool | None = None
    ) -> Tenant:
        return self._run(api.update_tenant(slug, name, disabled))

    def create_receiver(
        self,
        name: str,
        type: str,
        version: str,
        *,
        description: str = "",
        schema: Mapping[str, Any] | None = None,
    ) -> str:
        """Register a receiver (its id). Idempotent: the same registration answers the
        existing receiver's id; the same name, type and version otherwise is a Conflict."""
        return self._run(api.create_receiver(name, type, version, description, schema))

    def get_receiver(self, receiver_id: str) -> Receiver:
        return self._run(api.get_receiver(receiver_id))

    def list_receivers(
        self,
        *,
        name: str | None = None,
        type: str | None = None,
        version: str | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Iterator[Receiver]:
        return self._pages(api.list_receivers(name, type, version, limit, order))

    def create_event(
        self,
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
    ) -> str:
        """Record an event (its id); `payload` must pass the receiver's schema."""
        return self._run(
            api.create_event(
                api.event_body(
                    name=name,
                    version=version,
                    release=release,
                    platform_id=platform_id,
                    package=package,
                    event_receiver_id=event_receiver_id,
                    success=success,
                    payload=payload,
                    description=description,
                )
            )
        )

    def create_events(self, events: Sequence[Mapping[str, Any]]) -> list[str]:
        """Record up to 1000 events at once, all or none (their ids, in order)."""
        return self._run(api.create_events(events))

    def get_event(self, event_id: str) -> Event:
        return self._run(api.get_event(event_id))

    def list_events(
        self,
        *,
        name: str | None = None,
        version: str | None = None,
        release: str | None = None,
        platform_id: str | None = None,
        package: str | None = None,
        success: bool | None = None,
        event_receiver_id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Iterator[Event]:
        filters = {
            "name": name,
            "version": version,
            "release": release,
            "platform_id": platform_id,
            "package": package,
            "success": success,
            "event_receiver_id": event_receiver_id,
            "since": since,
            "until": until,
        }
        return self._pages(api.list_events(filters, limit, order))

    def create_group(
        self,
        name: str,
        type: str,
        version: str,
        event_receiver_ids: Sequence[str],
        *,
        description: str = "",
        enabled: bool | None = None,
    ) -> str:
        return self._run(
            api.create_group(
                name=name,
                type=type,
                version=version,
                event_receiver_ids=event_receiver_ids,
                description=description,
                enabled=enabled,
            )
        )

    def get_group(self, group_id: str) -> Group:
        return self._run(api.get_group(group_id))

    def list_groups(
        self,
        *,
        name: str | None = None,
        type: str | None = None,
        version: str | None = None,
        enabled: bool | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Iterator[Group]:
        return self._pages(
            api.list_groups(
                name=name, type=type, version=version, enabled=enabled, limit=limit, order=order
            )
        )

    def update_group(
        self,
        group_id: str,
        *,
        enabled: bool | None = None,
        description: str | None = None,
        add_receiver_ids: Sequence[str] | None = None,
        remove_receiver_ids: Sequence[str] | None = None,
    ) -> Group:
        return self._run(
            api.update_group(group_id, enabled, description, add_receiver_ids, remove_receiver_ids)
        )

    def enable_group(self, group_id: str) -> Group:
        return self._run(api.update_group(group_id, True, None, None, None))

    def disable_group(self, group_id: str) -> Group:
        return self._run(api.update_group(group_id, False, None, None, None))

    def delete_group(self, group_id: str) -> None:
        return self._run(api.delete_group(group_id))

    def group_status(self, group_id: str, key: Nvrpp, *, wait: int | None = None) -> GroupStatus:
        """The gate for one artifact; with `wait` (1..60 s) held until it completes or the
        time is up (a long poll)."""
        return self._run(api.group_status(group_id, key, wait))

    def list_completions(
        self,
        group_id: str,
        *,
        name: str | None = None,
        version: str | None = None,
        release: str | None = None,
        platform_id: str | None = None,
        package: str | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Iterator[Completion]:
        filters = {
            "name": name,
            "version": version,
            "release": release,
            "platform_id": platform_id,
            "package": package,
        }
        return self._pages(api.list_completions(group_id, filters, limit, order))

    def create_subscription(
        self,
        name: str,
        url: str,
        *,
        description: str | None = None,
        enabled: bool | None = None,
        filter: Mapping[str, Any] | None = None,
        ordering: str | None = None,
    ) -> str:
        """A webhook subscription (needs a server with subscriptions)."""
        return self._run(
            api.create_subscription(
                body(
                    name=name,
                    url=url,
                    description=description,
                    enabled=enabled,
                    filter=None if filter is None else dict(filter),
                    ordering=ordering,
                )
            )
        )

    def get_subscription(self, subscription_id: str) -> Subscription:
        return self._run(api.get_subscription(subscription_id))

    def list_subscriptions(
        self, *, limit: int | None = None, order: str | None = None
    ) -> Iterator[Subscription]:
        return self._pages(api.list_subscriptions(limit, order))

    def update_subscription(self, subscription_id: str, **fields: Any) -> Subscription:
        """Change any of the create fields (`enabled=True` clears `disabled_reason`)."""
        return self._run(api.update_subscription(subscription_id, fields))

    def delete_subscription(self, subscription_id: str) -> None:
        return self._run(api.delete_subscription(subscription_id))

    def subscription_secret(self, subscription_id: str) -> str:
        return self._run(api.subscription_secret(subscription_id))

    def rotate_subscription_secret(
        self, subscription_id: str, *, grace_seconds: int | None = None
    ) -> str:
        return self._run(api.rotate_subscription_secret(subscription_id, grace_seconds))

    def list_deliveries(
        self,
        subscription_id: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Iterator[Delivery]:
        return self._pages(api.list_deliveries(subscription_id, status, limit, order))

    def get_delivery(self, subscription_id: str, delivery_id: str) -> Delivery:
        return self._run(api.get_delivery(subscription_id, delivery_id))

    def redrive(
        self,
        subscription_id: str,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> int:
        """Dead deliveries back to pending; how many."""
        return self._run(api.redrive(subscription_id, since, until))

    def replay(self, subscription_id: str, *, after: int) -> int:
        """Deliver every matching message after a log position (again); how many."""
        return self._run(api.replay(subscription_id, after))

    def ping(self, subscription_id: str) -> None:
        return self._run(api.ping(subscription_id))

    def login(self, username: str, password: str, *, tenant: str | None = None) -> Token:
        """An access token for a user (this client keeps using its own credential)."""
        grant = body(grant_type="password", username=username, password=password, tenant=tenant)
        return self._run(api.token(grant))

    def exchange_api_key(self, key: str) -> Token:
        """An access token for an API key."""
        return self._run(api.token({"grant_type": "api_key", "api_key": key}))

    def refresh_token(self, refresh_token: str) -> Token:
        return self._run(api.token({"grant_type": "refresh_token", "refresh_token": refresh_token}))

    def revoke_token(self, token: str) -> None:
        return self._run(api.revoke_token(token))

    def jwks(self) -> dict[str, Any]:
        return self._run(api.jwks())

    def create_api_key(
        self, name: str, role: str, *, expires_at: datetime | str | None = None
    ) -> NewApiKey:
        """A new API key; its text (`.key`) is shown this once."""
        return self._run(api.create_api_key(name, role, expires_at))

    def get_api_key(self, key_id: str) -> ApiKey:
        return self._run(api.get_api_key(key_id))

    def list_api_keys(
        self, *, limit: int | None = None, order: str | None = None
    ) -> Iterator[ApiKey]:
        return self._pages(api.list_api_keys(limit, order))

    def delete_api_key(self, key_id: str) -> None:
        """Revoke an API key."""
        return self._run(api.delete_api_key(key_id))

    def create_user(self, username: str, password: str, roles: Sequence[str]) -> str:
        return self._run(api.create_user(username, password, roles))

    def get_user(self, user_id: str) -> User:
        return self._run(api.get_user(user_id))

    def list_users(self, *, limit: int | None = None, order: str | None = None) -> Iterator[User]:
        return self._pages(api.list_users(limit, order))

    def update_user(
        self,
        user_id: str,
        *,
        roles: Sequence[str] | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> User:
        return self._run(api.update_user(user_id, roles, disabled, password))

    def delete_user(self, user_id: str) -> None:
        return self._run(api.delete_user(user_id))

    def live(self) -> dict[str, Any]:
        """`GET /healthz/live`."""
        return self._run(api.live())

    def ready(self) -> dict[str, Any]:
        """`GET /healthz/ready` (a not-ready server raises ServiceUnavailable)."""
        return self._run(api.ready())


def _json(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError("a message is a JSON object")
    return value


def split_ref(ref: str) -> tuple[str, str] | None:
    """`name@version` -> (name, version); None for an id."""
    if "@" not in ref:
        return None
    name, _, version = ref.rpartition("@")
    if not name or not version:
        raise ValueError(f"{ref!r} is neither an id nor name@version")
    return name, version


def _one(ref: str, kind: str, by_id: Any, listing: Any) -> Any:
    parts = split_ref(ref)
    if parts is None:
        return by_id(ref)
    name, version = parts
    found = list(listing(name=name, version=version, limit=10))
    if not found:
        raise NotFound(404, title="Not Found", detail=f"No {kind} {ref}.")
    if len(found) > 1:
        types = ", ".join(sorted(getattr(f, "type", "?") for f in found))
        raise ValueError(f"{len(found)} {kind}s are {ref} (types {types}): give an id")
    return found[0]
