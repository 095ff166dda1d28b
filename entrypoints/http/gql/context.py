"""What every resolver of one request shares: the caller, its permissions so far, the
batch loaders.

- `allow(permission)`: the use cases' `authorize`, asked once per permission per
  request (a refusal is audited once, and every field that needs it is refused).
- `Loader`: keys asked for while one list is being resolved are fetched together
  by one call on the next turn of the event loop (the DataLoader pattern): the
  receivers of a page of 100 events are one read, not 100; so are the attempts of a
  page of deliveries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Generic, TypeVar

from litestar.types import Scope

from core.domain.access import Permission
from core.domain.delivery import Attempt
from core.domain.errors import Forbidden
from core.domain.model import Receiver
from core.usecases import Access, Actor, RequestContext, Services
from core.usecases.common import not_found

__all__ = ["Context", "Loader"]

K = TypeVar("K")
V = TypeVar("V")


class Loader(Generic[K, V]):
    """Batches `load(key)` calls made in one turn of the event loop into one `fetch`."""

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        missing: Callable[[K], Exception],
    ) -> None:
        self._fetch = fetch
        self._missing = missing
        self._futures: dict[K, asyncio.Future[V]] = {}
        self._queue: list[K] = []
        self._running: set[asyncio.Task[None]] = set()  # the loop keeps weak references only
        #: How many batches were fetched (tests count them).
        self.batches = 0

    def load(self, key: K) -> asyncio.Future[V]:
        future = self._futures.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._futures[key] = future
            self._queue.append(key)
            if len(self._queue) == 1:
                loop.call_soon(self._dispatch)
        return future

    def _dispatch(self) -> None:
        keys, self._queue = self._queue, []
        task = asyncio.ensure_future(self._run(keys))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, keys: list[K]) -> None:
        self.batches += 1
        try:
            found = await self._fetch(keys)
        except Exception as exc:
            for key in keys:
                self._futures[key].set_exception(exc)
            return
        for key in keys:
            future = self._futures[key]
            if key in found:
                future.set_result(found[key])
            else:
                future.set_exception(self._missing(key))


class Context:
    """One GraphQL request's caller and shared state."""

    def __init__(
        self,
        services: Services,
        access: Access,
        request: RequestContext,
        scope: Scope | None = None,
    ) -> None:
        self.services = services
        self.access = access
        self.request = request
        self.scope = scope
        self._granted: dict[Permission, Forbidden | None] = {}
        self._actor: Actor | None = None
        self.receivers: Loader[str, Receiver] = Loader(
            self._receivers, lambda ident: not_found("event receiver", ident)
        )
        self.attempts: Loader[str, list[Attempt]] = Loader(
            self._attempts, lambda ident: not_found("delivery", ident)
        )

    @property
    def actor(self) -> Actor:
        """The use cases' caller (Forbidden for a platform administrator without a tenant)."""
        if self._actor is None:
            self._actor = self.access.actor(self.request.request_id)
        return self._actor

    def granted(self, permission: Permission) -> bool:
        """Whether `permission` was already granted in this request."""
        return permission in self._granted and self._granted[permission] is None

    async def allow(self, permission: Permission) -> None:
        """Raise Forbidden (audited once per request and permission) unless granted."""
        if permission in self._granted:
            refused = self._granted[permission]
            if refused is not None:
                raise refused
            return
        try:
            await self.services.identity.authorize(self.access, permission, self.request)
        except Forbidden as exc:
            self._granted[permission] = exc
            raise
        self._granted[permission] = None

    async def _receivers(self, ids: Collection[str]) -> dict[str, Receiver]:
        return await self.services.receivers.get_many(self.actor, ids)

    async def _attempts(self, ids: Collection[str]) -> dict[str, list[Attempt]]:
        """The attempts of a page of the tenant's deliveries (never attempted: none)."""
        found = await self.services.subscriptions.attempts(self.actor, ids)
        return {ident: found.get(ident, []) for ident in ids}
