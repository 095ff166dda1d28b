"""The Combiner port's contract (group commit's queue): every adapter passes every test here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest

from adapters.groupcommit import Lanes
from core.domain.groupcommit import GroupPolicy
from core.ports import Combiner

pytestmark = pytest.mark.anyio

MakeCombiner = Callable[[GroupPolicy], Combiner]
ADAPTERS: dict[str, MakeCombiner] = {"lanes": Lanes}


@pytest.fixture(params=sorted(ADAPTERS))
def make(request: pytest.FixtureRequest) -> MakeCombiner:
    return ADAPTERS[request.param]


class Recorder:
    """A `run` that records each group it gets, answers each write by a rule, and can be
    held (a transaction that takes its time) so that others arrive meanwhile."""

    def __init__(self, answer: Callable[[str], str | Exception] = str.upper) -> None:
        self.groups: list[list[str]] = []
        self.answer = answer
        self.release = anyio.Event()
        self.hold = False
        self.started = anyio.Event()
        self._ran = [anyio.Event() for _ in range(8)]

    def ran(self, groups: int) -> anyio.Event:
        """Set once `groups` groups have started."""
        return self._ran[groups - 1]

    async def __call__(self, writes: Sequence[str]) -> list[str | Exception]:
        self.groups.append(list(writes))
        self.started.set()
        self._ran[len(self.groups) - 1].set()
        if self.hold:
            await self.release.wait()
        else:
            await anyio.lowlevel.checkpoint()  # a transaction yields at least once
        return [self.answer(w) for w in writes]


async def test_a_lone_write_runs_alone_and_gets_its_answer(make: MakeCombiner) -> None:
    combiner, run = make(GroupPolicy()), Recorder()
    assert await combiner.submit("t", "a", 1, run) == "A"
    assert await combiner.submit("t", "b", 1, run) == "B"
    assert run.groups == [["a"], ["b"]]


async def test_writes_arriving_together_share_a_group_in_arrival_order(
    make: MakeCombiner,
) -> None:
    combiner, run = make(GroupPolicy()), Recorder()
    answers: dict[str, str] = {}

    async def submit(write: str) -> None:
        answers[write] = await combiner.submit("t", write, 1, run)

    async with anyio.create_task_group() as tg:
        for write in "abcde":
            tg.start_soon(submit, write)
    assert run.groups == [list("abcde")]
    assert answers == {w: w.upper() for w in "abcde"}


async def turns_then_submit(
    combiner: Combiner, run: Recorder, write: str, turns: int, answers: dict[str, str]
) -> None:
    """`write` submitted after `turns` turns of the loop."""
    for _ in range(turns):
        await asyncio.sleep(0)
    answers[write] = await combiner.submit("t", write, 1, run)


@pytest.mark.parametrize(("gather_turns", "first"), [(1, "ab"), (2, "abc"), (3, "abcd")])
async def test_writes_arriving_turn_after_turn_join_the_gathering_group(
    make: MakeCombiner, gather_turns: int, first: str
) -> None:
    """b, c and d reach the lane one turn of the loop after another, each before the
    gathering write a has its next turn: a keeps gathering while they come, for at most
    `gather_turns` turns; the others form the next group."""
    combiner, run = make(GroupPolicy(gather_turns=gather_turns)), Recorder()
    answers: dict[str, str] = {}
    async with anyio.create_task_group() as tg:
        for turns, write in ((1, "b"), (2, "c"), (3, "d"), (0, "a")):  # a starts last
            tg.start_soon(turns_then_submit, combiner, run, write, turns, answers)
    assert run.groups[0] == list(first)
    assert [w for group in run.groups for w in group] == list("abcd")
    assert answers == {w: w.upper() for w in "abcd"}


async def test_a_turn_that_brings_no_write_ends_the_gathering(make: MakeCombiner) -> None:
    combiner, run = make(GroupPolicy(gather_turns=8)), Recorder()
    answers: dict[str, str] = {}
    async with anyio.create_task_group() as tg:
        for turns, write in ((1, "b"), (3, "d"), (0, "a")):  # nobody in the second turn
            tg.start_soon(turns_then_submit, combiner, run, write, turns, answers)
    assert run.groups == [["a", "b"], ["d"]]


async def test_writes_arriving_while_busy_form_the_next_group_within_the_policy(
    make: MakeCombiner,
) -> None:
    combiner = make(GroupPolicy(max_writes=3, max_events=5))
    run = Recorder()
    run.hold = True
    answers: dict[str, str] = {}

    async def submit(write: str, size: int) -> None:
        answers[write] = await combiner.submit("t", write, size, run)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, "first", 1)
        await run.started.wait()  # the first group is in flight, alone
        for write, size in [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 4), ("f", 9)]:
            tg.start_soon(submit, write, size)
            await anyio.wait_all_tasks_blocked()
        run.hold = False
        run.release.set()
    # a, b, c: three writes (max_writes); d, e: 5 events; f alone: 9 events is too many
    # to join anyone, but the oldest always goes
    assert run.groups == [["first"], ["a", "b", "c"], ["d", "e"], ["f"]]
    assert answers == {w: w.upper() for w in ["first", "a", "b", "c", "d", "e", "f"]}


async def test_max_writes_one_never_combines(make: MakeCombiner) -> None:
    combiner, run = make(GroupPolicy(max_writes=1)), Recorder()
    async with anyio.create_task_group() as tg:
        for write in "abc":
            tg.start_soon(combiner.submit, "t", write, 1, run)
    assert run.groups == [["a"], ["b"], ["c"]]


async def test_each_write_gets_its_own_error_and_no_other(make: MakeCombiner) -> None:
    def answer(write: str) -> str | Exception:
        return ValueError(write) if write == "bad" else write.upper()

    combiner, run = make(GroupPolicy()), Recorder(answer)
    outcomes: dict[str, object] = {}

    async def submit(write: str) -> None:
        try:
            outcomes[write] = await combiner.submit("t", write, 1, run)
        except ValueError as exc:
            outcomes[write] = exc

    async with anyio.create_task_group() as tg:
        for write in ["a", "bad", "c"]:
            tg.start_soon(submit, write)
    assert run.groups == [["a", "bad", "c"]]
    assert outcomes["a"] == "A"
    assert outcomes["c"] == "C"
    assert isinstance(outcomes["bad"], ValueError)
    assert str(outcomes["bad"]) == "bad"


async def test_a_run_that_raises_fails_its_group_and_strands_nobody(make: MakeCombiner) -> None:
    combiner = make(GroupPolicy())
    calls = 0

    async def broken(writes: Sequence[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        if calls == 1:
            raise RuntimeError("broken run")
        return [w.upper() for w in writes]

    failed: list[str] = []

    async def submit(write: str) -> None:
        try:
            await combiner.submit("t", write, 1, broken)
        except RuntimeError:
            failed.append(write)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for write in "abc":
                tg.start_soon(submit, write)
    assert sorted(failed) == ["a", "b", "c"]
    # the lane was handed on: it works again
    assert await combiner.submit("t", "d", 1, broken) == "D"


async def test_a_cancelled_waiting_write_leaves_the_queue(make: MakeCombiner) -> None:
    combiner, run = make(GroupPolicy()), Recorder()
    run.hold = True
    answers: dict[str, str] = {}

    async def submit(write: str) -> None:
        answers[write] = await combiner.submit("t", write, 1, run)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "first")
            await run.started.wait()
            async with anyio.create_task_group() as doomed:
                doomed.start_soon(submit, "gone")
                await anyio.wait_all_tasks_blocked()
                doomed.cancel_scope.cancel()
            tg.start_soon(submit, "kept")
            await anyio.wait_all_tasks_blocked()
            run.hold = False
            run.release.set()
    assert run.groups == [["first"], ["kept"]]
    assert answers == {"first": "FIRST", "kept": "KEPT"}


async def test_a_group_finishes_for_all_when_the_task_running_it_is_cancelled(
    make: MakeCombiner,
) -> None:
    combiner, run = make(GroupPolicy()), Recorder()
    run.hold = True
    answers: dict[str, str] = {}
    leader = anyio.CancelScope()

    async def submit(write: str) -> None:
        answers[write] = await combiner.submit("t", write, 1, run)

    async def submit_as_leader() -> None:
        with leader:
            await submit("a")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "first")
            await run.started.wait()
            tg.start_soon(submit_as_leader)  # the oldest waiting: it will run the next group
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(submit, "b")
            await anyio.wait_all_tasks_blocked()
            first, run.release = run.release, anyio.Event()
            first.set()  # "first" ends; "a" is handed the lane and runs [a, b] ...
            await run.ran(2).wait()
            leader.cancel()  # ... and its request goes away meanwhile
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            assert "b" not in answers  # the group was not cut short
            run.release.set()
    assert run.groups == [["first"], ["a", "b"]]
    assert answers["b"] == "B"  # b got its answer; whether a's request did no longer matters


async def test_a_group_outlives_asyncio_cancelling_the_task_that_runs_it(
    make: MakeCombiner,
) -> None:
    """The same, cancelled the way a server's shutdown does it: `Task.cancel()`, which an
    anyio shield would not stop."""
    combiner, run = make(GroupPolicy()), Recorder()
    run.hold = True
    answers: dict[str, str] = {}
    leader: list[asyncio.Task[Any]] = []

    async def submit(write: str) -> None:
        answers[write] = await combiner.submit("t", write, 1, run)

    async def submit_as_leader() -> None:
        task = asyncio.current_task()
        assert task is not None
        leader.append(task)
        with contextlib.suppress(asyncio.CancelledError):
            await submit("a")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "first")
            await run.started.wait()
            tg.start_soon(submit_as_leader)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(submit, "b")
            await anyio.wait_all_tasks_blocked()
            first, run.release = run.release, anyio.Event()
            first.set()
            await run.ran(2).wait()  # "a" runs [a, b] ...
            leader[0].cancel()  # ... and is cancelled natively
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            assert leader[0].done()  # its request went away at once
            assert "b" not in answers  # the group did not
            run.release.set()
    assert run.groups == [["first"], ["a", "b"]]
    assert answers == {"first": "FIRST", "b": "B"}


async def test_a_write_cancelled_while_gathering_strands_nobody(make: MakeCombiner) -> None:
    combiner, run = make(GroupPolicy()), Recorder()
    answers: dict[str, str] = {}

    async def submit(write: str) -> None:
        answers[write] = await combiner.submit("t", write, 1, run)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, anyio.create_task_group() as doomed:
            doomed.start_soon(submit, "gone")  # arrives first: it gathers
            tg.start_soon(submit, "a")  # arrives while it gathers
            doomed.cancel_scope.cancel()  # cancelled in its turn of the loop
    assert run.groups == [["a"]]
    assert answers == {"a": "A"}


async def test_keys_are_independent(make: MakeCombiner) -> None:
    combiner = make(GroupPolicy())
    held, free = Recorder(), Recorder()
    held.hold = True
    async with anyio.create_task_group() as tg:
        tg.start_soon(combiner.submit, "one", "a", 1, held)
        await held.started.wait()
        with anyio.fail_after(5):  # another tenant's write does not wait for this one's
            assert await combiner.submit("two", "b", 1, free) == "B"
        held.release.set()
    assert held.groups == [["a"]]
    assert free.groups == [["b"]]


async def test_idle_lanes_are_forgotten() -> None:
    lanes = Lanes(GroupPolicy())
    run = Recorder()
    async with anyio.create_task_group() as tg:
        for key in ("one", "two", "three"):
            tg.start_soon(lanes.submit, key, "w", 1, run)
    assert len(lanes) == 0
