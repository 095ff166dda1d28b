"""The watcher in process: at least once, filters, dedupe, checkpoints, stop."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable

import anyio
import pytest
from waypost_client import (
    AsyncClient,
    AsyncWatcher,
    Client,
    FileCheckpoint,
    MemoryCheckpoint,
    Message,
    MessageFilter,
    Watcher,
)

from tests.client.conftest import QUICK, Served, wait_until
from tests.client.test_sdk import SCHEMA, key, unique


def head(client: Client) -> int:
    messages = list(client.messages(0))
    return messages[-1].position if messages else 0


def run_in_thread(watcher: Watcher) -> threading.Thread:
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return thread


def stop(
    watcher: Watcher,
    thread: threading.Thread,
    client: Client,
    nudge: Callable[[], object] | None = None,
) -> None:
    """Stop from another thread: at the next message (the nudge makes one that passes the
    server's filter) or keep-alive."""
    watcher.stop()
    if nudge is None:
        client.create_receiver(unique("nudge"), "ci.nudge", "1")
    else:
        nudge()
    thread.join(20)
    assert not thread.is_alive()


def test_a_raising_handler_is_retried_and_the_position_waits_for_it(acme: Client) -> None:
    start = head(acme)
    checkpoint = MemoryCheckpoint()
    calls: list[tuple[int, str]] = []

    def flaky(message: Message) -> None:
        calls.append((message.position, message.id))
        if len(calls) <= 2:
            assert checkpoint.position is None  # not advanced while it fails
            raise RuntimeError("not yet")

    watcher = Watcher(
        acme,
        flaky,
        checkpoint=checkpoint,
        after=start,
        handler_backoff=(0.01, 0.05),
        handle_signals=False,
        filter=MessageFilter(types=("waypost.receiver.created",)),
    )
    thread = run_in_thread(watcher)
    made = acme.create_receiver(unique("w"), "ci.w", "1")
    wait_until(lambda: watcher.state.handled >= 1)
    stop(watcher, thread, acme)
    # Two failures, then success: the same message three times, before any other.
    assert len({p for p, _ in calls[:3]}) == 1
    assert calls[0][0] > start
    assert checkpoint.position is not None
    assert checkpoint.position >= calls[0][0]
    created = [m for m in acme.messages(start) if m.subject == made]
    assert calls[0] == (created[0].position, created[0].id)


def test_filters_apply_locally_on_artifact_fields_and_success(acme: Client) -> None:
    receiver = acme.create_receiver(unique("f"), "ci.f", "1", schema=SCHEMA)
    start = head(acme)
    wanted = key(unique("want"))
    seen: list[Message] = []
    watcher = Watcher(
        acme,
        seen.append,
        after=start,
        filter=MessageFilter(types=("ci.f",), version=wanted.version, success=True),
        handle_signals=False,
    )
    thread = run_in_thread(watcher)
    for version, success in ((wanted.version, False), ("other", True), (wanted.version, True)):
        acme.create_event(
            **{**wanted.params(), "version": version},
            event_receiver_id=receiver,
            success=success,
            payload={"build": 1},
        )
    wait_until(lambda: len(seen) >= 1)

    def nudge() -> None:  # of the type the server may filter on, refused by the rest
        acme.create_event(**{**wanted.params(), "version": "nudge"}, event_receiver_id=receiver,
                          success=True, payload={"build": 1})  # fmt: skip

    stop(watcher, thread, acme, nudge)
    assert len(seen) == 1
    assert seen[0].success is True
    assert seen[0].attribute("eventversion") == wanted.version
    # A server that filters on type never sends the others (None); one that does not yet
    # sends them and the watcher notices (False).
    assert watcher.state.server_filters in {None, False}


def test_a_checkpoint_file_resumes_where_it_stopped_and_dedupe_drops_repeats(
    acme: Client, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "deep" / "watch.position"
    checkpoint = FileCheckpoint(path)
    assert checkpoint.load() is None
    start = head(acme)
    first: list[int] = []
    watcher = Watcher(acme, lambda m: first.append(m.position), checkpoint=checkpoint,
                      after=start, handle_signals=False)  # fmt: skip
    thread = run_in_thread(watcher)
    acme.create_receiver(unique("a"), "ci.a", "1")
    wait_until(lambda: len(first) >= 1)
    stop(watcher, thread, acme)
    saved = checkpoint.load()
    assert saved == watcher.position
    assert path.read_text() == f"{saved}\n"
    acme.create_receiver(unique("b"), "ci.b", "1")
    second: list[int] = []
    again = Watcher(acme, lambda m: second.append(m.position), checkpoint=checkpoint,
                    after=0, handle_signals=False)  # fmt: skip
    thread = run_in_thread(again)
    wait_until(lambda: len(second) >= 1)
    stop(again, thread, acme)
    assert saved is not None
    assert second[0] == saved + 1  # the checkpoint wins over `after`, nothing skipped
    assert not set(first) & set(second)
    # The dedupe window: a message seen again (by id) is not handed over twice.
    state = again.state
    repeat = next(iter(acme.messages(second[0] - 1)))
    state.position = None
    assert state.wanted(repeat) is False
    assert not list(tmp_path.glob("deep/.watch.position.*"))  # no temporary left behind


def test_a_corrupt_checkpoint_stops_rather_than_skips(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.position"
    path.write_text("forty-two")
    with pytest.raises(ValueError, match="does not hold a position"):
        FileCheckpoint(path).load()


def test_the_async_watcher_handles_and_stops(served: Served, acme: Client) -> None:
    start = head(acme)

    async def scenario() -> list[Message]:
        seen: list[Message] = []
        async with AsyncClient(served.url, served.acme_key, retry=QUICK) as client:
            fails = [1]

            async def handler(message: Message) -> None:
                if fails:
                    fails.pop()
                    raise RuntimeError("once")
                seen.append(message)
                watcher.stop()

            watcher = AsyncWatcher(client, handler, after=start, handle_signals=False,
                                   handler_backoff=(0.01, 0.02))  # fmt: skip
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watcher.run)
                await anyio.sleep(0.3)
                await client.create_receiver(unique("aw"), "ci.aw", "1")
            assert watcher.position == seen[0].position
        return seen

    seen = anyio.run(scenario)
    assert seen[0].type == "waypost.receiver.created"
