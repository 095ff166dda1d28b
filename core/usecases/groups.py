"""Groups: create, change, delete; their status for an artifact and their completions."""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from core.domain.commands import CreateGroup, PatchGroup
from core.domain.errors import FieldError, Invalid
from core.domain.groups import (
    MemberStatus,
    check_members_exist,
    is_complete,
    member_statuses,
    new_group,
    patch_group,
)
from core.domain.model import Completion, Group, GroupCreated, GroupDeleted, GroupModified, Nvrpp
from core.ports import CommitFeed, CompletionFilter, GroupFilter, PageRequest, ReadTx
from core.usecases.common import Actor, Deps, Once, ids_only, not_found


class GroupStatus(msgspec.Struct, frozen=True, kw_only=True):
    complete: bool
    members: list[MemberStatus]


#: The longest a status request may wait for its gate (API.md: `wait` 1..60 seconds).
MAX_WAIT_SECONDS = 60


class Groups:
    def __init__(self, deps: Deps, feed: CommitFeed | None = None) -> None:
        self._deps = deps
        self._feed = feed

    async def create(
        self, actor: Actor, cmd: CreateGroup, once: Once[Group] | None = None
    ) -> Group:
        deps = self._deps
        group = new_group(
            cmd, id=deps.ids.new_id(), tenant_id=actor.tenant_id, now=deps.clock.now()
        )
        async with deps.write(actor.tenant_id, once) as tx:
            known = await tx.receivers.get_many(actor.tenant_id, ids_only(group.event_receiver_ids))
            check_members_exist(group.event_receiver_ids, set(known), "/event_receiver_ids")
            deps.remember(tx, once, group)
            await tx.append(deps.entries([GroupCreated(group=group)]), actor.meta())
        return group

    async def patch(self, actor: Actor, group_id: str, cmd: PatchGroup) -> Group:
        deps = self._deps
        async with deps.store.write(actor.tenant_id) as tx:
            group = await _get(tx, actor, group_id)
            changed = patch_group(group, cmd, now=deps.clock.now())
            if changed is group:
                return group
            known = await tx.receivers.get_many(actor.tenant_id, ids_only(cmd.add_receiver_ids))
            check_members_exist(cmd.add_receiver_ids, set(known), "/add_receiver_ids")
            version = await tx.log.stream_version(actor.tenant_id, group.id)
            await tx.append(
                deps.entries([GroupModified(group=changed)], {group.id: version}), actor.meta()
            )
        return changed

    async def delete(self, actor: Actor, group_id: str) -> None:
        deps = self._deps
        async with deps.store.write(actor.tenant_id) as tx:
            group = await _get(tx, actor, group_id)
            version = await tx.log.stream_version(actor.tenant_id, group.id)
            await tx.append(
                deps.entries([GroupDeleted(group=group)], {group.id: version}), actor.meta()
            )

    async def get(self, actor: Actor, group_id: str) -> Group:
        async with self._deps.store.read_stale(actor.tenant_id) as tx:
            return await _get(tx, actor, group_id)

    async def status(
        self, actor: Actor, group_id: str, key: Nvrpp, wait: float | None = None
    ) -> GroupStatus:
        """Per member, its latest event for the artifact and whether it passes.

        With `wait` (seconds, up to `MAX_WAIT_SECONDS`), an incomplete gate is watched
        until it completes or the time is up, and the status is answered as it then is
        (a long poll). The watch wakes on the tenant's commits (the commit feed), never
        in a loop of its own: each wake-up reads the status once more.
        """
        if wait is None or wait <= 0:
            return (await self._status(actor, group_id, key))[0]
        if not wait <= MAX_WAIT_SECONDS:
            raise Invalid(
                "Invalid wait", [FieldError("wait", f"must be 1..{MAX_WAIT_SECONDS} seconds")]
            )
        if self._feed is None:
            raise RuntimeError("these Services were built without a commit feed")
        async with self._feed.watch(actor.tenant_id, wait) as watch:
            status, head = await self._status(actor, group_id, key)
            while not status.complete:
                if not await watch.wait(head):
                    # Time is up: the status as it is now (a commit of another process may
                    # not have reached the feed yet).
                    return (await self._status(actor, group_id, key))[0]
                status, head = await self._status(actor, group_id, key)
        return status

    async def _status(self, actor: Actor, group_id: str, key: Nvrpp) -> tuple[GroupStatus, int]:
        """The status and the tenant's log position it was read at (one snapshot)."""
        async with self._deps.store.read() as tx:
            group = await _get(tx, actor, group_id)
            latest = await tx.latest.get_many(actor.tenant_id, group.event_receiver_ids, [key])
            head = await tx.log.head(actor.tenant_id)
        status = GroupStatus(
            complete=is_complete(group, key, latest),
            members=member_statuses(group, key, latest),
        )
        return status, head

    async def completions(
        self, actor: Actor, group_id: str, where: CompletionFilter, page: PageRequest
    ) -> list[Completion]:
        async with self._deps.store.read_stale(actor.tenant_id) as tx:
            await _get(tx, actor, group_id)
            return await tx.completions.list(actor.tenant_id, group_id, where, page)

    async def containing(self, actor: Actor, receiver_ids: Collection[str]) -> list[Group]:
        """The groups that any of `receiver_ids` is a member of, by id."""
        async with self._deps.store.read() as tx:
            return await tx.groups.containing(actor.tenant_id, receiver_ids)

    async def list(self, actor: Actor, where: GroupFilter, page: PageRequest) -> list[Group]:
        async with self._deps.store.read_stale(actor.tenant_id) as tx:
            return await tx.groups.list(actor.tenant_id, where, page)


async def _get(tx: ReadTx, actor: Actor, group_id: str) -> Group:
    group = await tx.groups.get(actor.tenant_id, group_id)
    if group is None:
        raise not_found("group", group_id)
    return group
