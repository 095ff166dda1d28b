"""Group commit's queue (the `Combiner` port) on asyncio: a lane per tenant.

The rules are `core.domain.groupcommit`'s: this module only keeps each tenant's lane
(its state and its waiting writes) and wakes tasks. A write that finds its lane idle
yields to the event loop once (more while each turn brings another write:
`keep_gathering`), then runs the first group (itself and whatever arrived meanwhile).
One that finds it gathering or busy waits; when the group in flight ends, its runner
hands the lane to the oldest waiting write, whose task then runs the next group (`take`)
for all its members and answers each of them. Idle lanes are forgotten, so memory holds
only the tenants writing right now.

The waiting and waking are asyncio's own (a future per waiting write, `asyncio.sleep(0)`
for the turn of the loop), not anyio's wrappers: on this path, taken by every request,
they cost half as much (callgrind), and the server runs on asyncio (uvicorn).

Cancellation: a waiting write that is cancelled leaves the queue. A group of several
writes runs in a task of its own, and the request that started it waits for its answer
like the others: that request may be cancelled (a server that stops), the others still
get their answers. A write alone runs in its own request's task, as before group commit.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from core.domain.groupcommit import (
    Action,
    GroupPolicy,
    LaneEvent,
    LaneState,
    keep_gathering,
    step,
    take,
)

__all__ = ["Lanes"]

W = TypeVar("W")
R = TypeVar("R")

Run = Callable[[Sequence[W]], Awaitable[Sequence[R | Exception]]]


class _Waiter(Generic[W, R]):
    """One submitted write, until it has its answer."""

    __slots__ = ("answered", "group", "outcome", "size", "woken", "write")

    def __init__(self, write: W, size: int) -> None:
        self.write = write
        self.size = size
        self.woken: asyncio.Future[None] | None = None  # made when it has to wait
        self.group: list[_Waiter[W, R]] | None = None  # set when it is to run the next group
        self.outcome: R | BaseException | None = None
        self.answered = False

    def answer(self, outcome: R | BaseException) -> None:
        self.outcome, self.answered = outcome, True
        if self.woken is not None and not self.woken.done():
            self.woken.set_result(None)

    def result(self) -> R:
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]  # answered: an R


class _Lane(Generic[W, R]):
    __slots__ = ("state", "waiting")

    def __init__(self) -> None:
        self.state = LaneState.IDLE
        self.waiting: deque[_Waiter[W, R]] = deque()


class Lanes:
    """The `Combiner` port: a lane per key, groups as `policy` allows."""

    def __init__(self, policy: GroupPolicy | None = None) -> None:
        self.policy = policy if policy is not None else GroupPolicy()
        self._lanes: dict[str, _Lane[Any, Any]] = {}
        self._running: set[asyncio.Task[None]] = set()  # groups running in tasks of their own

    async def submit(self, key: str, write: W, size: int, run: Run[W, R]) -> R:
        lane: _Lane[W, R] | None = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        me: _Waiter[W, R] = _Waiter(write, size)
        lane.state, action = step(lane.state, LaneEvent.ARRIVE, bool(lane.waiting))
        lane.waiting.append(me)
        if action is Action.GATHER:
            # One turn of the loop, for the requests received already; then this write runs
            # the first group, itself in it (it is the oldest).
            try:
                await asyncio.sleep(0)
                turns, before = 1, 1
                while keep_gathering(turns, before, len(lane.waiting), self.policy):
                    before = len(lane.waiting)
                    await asyncio.sleep(0)
                    turns += 1
            except BaseException:  # cancelled meanwhile: the others must not be stranded
                lane.waiting.remove(me)
                self._hand_on(key, lane, LaneEvent.GATHERED)
                raise
            lane.state, action = step(lane.state, LaneEvent.GATHERED, True)
            await self._run(key, lane, self._next_group(lane), run, me)
            return me.result()
        me.woken = asyncio.get_running_loop().create_future()
        try:
            await me.woken
        except BaseException:
            if me.group is not None and not me.answered:
                # Handed the lane, then cancelled before running: the group runs anyway,
                # in a task of its own, for its other members.
                self._detach(self._answer(key, lane, me.group, run))
            elif not me.answered and me in lane.waiting:
                lane.waiting.remove(me)
            raise
        if me.group is not None and not me.answered:
            await self._run(key, lane, me.group, run, me)
        return me.result()

    async def _run(
        self,
        key: str,
        lane: _Lane[W, R],
        group: list[_Waiter[W, R]],
        run: Run[W, R],
        me: _Waiter[W, R],
    ) -> None:
        """Run a group and answer its writes (`me` is the one whose task is here).

        A write alone runs in its own task: cancelling it rolls its transaction back, as
        before group commit. A group of several runs in a task of its own, and `me` waits
        for its answer like the others (all resume together): the cancellation of `me`'s
        request (a server that stops cancels tasks with asyncio's `Task.cancel`, which an
        anyio shield would not stop) takes `me` away, not the group."""
        if len(group) == 1:
            await self._answer(key, lane, group, run)
            return
        me.woken = asyncio.get_running_loop().create_future()
        self._detach(self._answer(key, lane, group, run))
        await me.woken

    async def _answer(
        self, key: str, lane: _Lane[W, R], group: list[_Waiter[W, R]], run: Run[W, R]
    ) -> None:
        """Run a group, answer each of its writes, and hand the lane on (or let it rest).
        Whatever happens, every write gets an answer; a group of several never raises (its
        writes carry the error), a write alone raises its own error too."""
        try:
            outcomes = await run([w.write for w in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"a group of {len(group)} writes got {len(outcomes)} answers")
        except BaseException as exc:
            for waiter in group:  # nobody may wait forever for an answer
                waiter.answer(exc)
            if len(group) == 1 or not isinstance(exc, Exception):
                raise
            return
        finally:
            self._hand_on(key, lane, LaneEvent.FINISH)
        for waiter, outcome in zip(group, outcomes, strict=True):
            waiter.answer(outcome)

    def _detach(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """`work` in a task of its own, kept referenced until it ends."""
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def _hand_on(self, key: str, lane: _Lane[W, R], event: LaneEvent) -> None:
        """The group in flight ended (or the gathering write went away): hand the lane to
        the oldest waiting write, whose task runs the next group, or let it rest."""
        lane.state, action = step(lane.state, event, bool(lane.waiting))
        if action is Action.REST:
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            return
        group = self._next_group(lane)
        leader = group[0]
        leader.group = group
        assert leader.woken is not None
        if not leader.woken.done():  # done: cancelled meanwhile, it runs the group anyway
            leader.woken.set_result(None)

    def _next_group(self, lane: _Lane[W, R]) -> list[_Waiter[W, R]]:
        waiting = lane.waiting
        sizes = [w.size for w in itertools.islice(waiting, self.policy.max_writes)]
        return [waiting.popleft() for _ in range(take(sizes, self.policy))]

    def __len__(self) -> int:
        """Lanes in use (tenants with a write in flight)."""
        return len(self._lanes)
