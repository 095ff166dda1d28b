"""Groups: create, change, delete; their status for an artifact and their completions."""

from __future__ import annotations

import msgspec

from core.domain.commands import CreateGroup, PatchGroup
from core.domain.groups import (
    MemberStatus,
    check_members_exist,
    is_complete,
    member_statuses,
    new_group,
    patch_group,
)
from core.domain.model import Completion, Group, GroupCreated, GroupDeleted, GroupModified, Nvrpp
from core.ports import CompletionFilter, GroupFilter, PageRequest, ReadTx
from core.usecases.common import Actor, Deps, Once, ids_only, not_found


class GroupStatus(msgspec.Struct, frozen=True, kw_only=True):
    complete: bool
    members: list[MemberStatus]


class Groups:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

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
        async with self._deps.store.read() as tx:
            return await _get(tx, actor, group_id)

    async def status(self, actor: Actor, group_id: str, key: Nvrpp) -> GroupStatus:
        """Per member, its latest event for the artifact and whether it passes."""
        async with self._deps.store.read() as tx:
            group = await _get(tx, actor, group_id)
            latest = await tx.latest.get_many(actor.tenant_id, group.event_receiver_ids, [key])
        return GroupStatus(
            complete=is_complete(group, key, latest),
            members=member_statuses(group, key, latest),
        )

    async def completions(
        self, actor: Actor, group_id: str, where: CompletionFilter, page: PageRequest
    ) -> list[Completion]:
        async with self._deps.store.read() as tx:
            await _get(tx, actor, group_id)
            return await tx.completions.list(actor.tenant_id, group_id, where, page)

    async def list(self, actor: Actor, where: GroupFilter, page: PageRequest) -> list[Group]:
        async with self._deps.store.read() as tx:
            return await tx.groups.list(actor.tenant_id, where, page)


async def _get(tx: ReadTx, actor: Actor, group_id: str) -> Group:
    group = await tx.groups.get(actor.tenant_id, group_id)
    if group is None:
        raise not_found("group", group_id)
    return group
