"""The watcher: follow a tenant's messages, hand each to your handler at least once.

```python
def deploy(message: Message) -> None:
    ...  # raise to have it retried

Watcher(Client(), deploy, filter=MessageFilter(types=("waypost.group.completed",)),
        checkpoint=FileCheckpoint("deploy.position")).run()
```

How it keeps its promise (docs/explanation/watcher.md):

- It follows `GET /api/v1/messages` and, after any disconnection (a network error,
  the server restarting), reconnects with `Last-Event-ID` = the position of the last
  message it finished with: nothing in between is skipped.
- **At least once**: the handler is called, and retried with backoff for as long as
  it raises; only when it has returned does the position advance and get saved
  (`CheckpointStore`). A watcher killed at any moment starts again, from its
  checkpoint, with the message it had not finished (so handlers should tolerate
  seeing a message twice: the message `id` is the same every time).
- A window of recent message ids (`dedupe`) drops the repeats a reconnection can bring.
- Filters: `types` and `subjects` are sent to the server (which may or may not filter
  on them) and applied here too; the artifact's fields and `success` are applied here.
- SIGINT / SIGTERM stop it gracefully: a handler that is running finishes first, and
  its message is saved as done.

Without a checkpoint or `after`, it starts at the end of the log ("from now on").
"""

from __future__ import annotations

import collections
import logging
import os
import pathlib
import random
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

import anyio
import httpx

from waypost_client.aio import AsyncClient
from waypost_client.client import Client
from waypost_client.errors import (
    ConnectionFailed,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)
from waypost_client.models import Message

__all__ = [
    "AsyncWatcher",
    "CheckpointStore",
    "FileCheckpoint",
    "MemoryCheckpoint",
    "MessageFilter",
    "Watcher",
]

log = logging.getLogger("waypost_client.watcher")

#: Errors after which the watcher reconnects (others, such as 401 and 403, stop it).
_TRANSIENT = (
    httpx.TransportError,
    httpx.StreamError,
    ConnectionFailed,
    RateLimited,
    ServiceUnavailable,
    ServerError,
)


class CheckpointStore(Protocol):
    """Where a watcher keeps the position of the last message it finished with."""

    def load(self) -> int | None:
        """The saved position, or None when nothing was saved yet."""
        ...

    def save(self, position: int) -> None: ...


class MemoryCheckpoint:
    """A checkpoint in this process only (tests, or a watcher that may start over)."""

    def __init__(self, position: int | None = None) -> None:
        self.position = position

    def load(self) -> int | None:
        return self.position

    def save(self, position: int) -> None:
        self.position = position


class FileCheckpoint:
    """The position in a small text file, replaced atomically: written to a temporary
    file in the same directory, flushed to disk, then renamed over the old one, so a
    crash leaves the old position or the new one, never a torn file."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = pathlib.Path(path)
        self.fsync = fsync

    def load(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        if not text.isdigit():
            raise ValueError(f"the checkpoint file {self.path} does not hold a position: {text!r}")
        return int(text)

    def save(self, position: int) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(f"{position}\n")
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            pathlib.Path(temporary).unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class MessageFilter:
    """Which messages reach the handler: every part given must match (empty: all)."""

    types: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    name: str | None = None
    version: str | None = None
    release: str | None = None
    platform_id: str | None = None
    package: str | None = None
    success: bool | None = None

    def server_side(self, message: Message) -> bool:
        """Whether the message passes the parts a server may filter on (type, subject)."""
        if self.types and message.type not in self.types:
            return False
        return not (self.subjects and message.subject not in self.subjects)

    def matches(self, message: Message) -> bool:
        if not self.server_side(message):
            return False
        wanted = {
            "eventname": self.name,
            "eventversion": self.version,
            "release": self.release,
            "platformid": self.platform_id,
            "package": self.package,
        }
        for attribute, value in wanted.items():
            if value is not None and message.attribute(attribute) != value:
                return False
        return self.success is None or message.success is self.success


class _Stopped(BaseException):
    """Raised out of a blocking read by a stop signal (never out of `run`)."""


class _Core:
    """What both watchers share: position, dedupe window, filters, backoff."""

    def __init__(
        self,
        *,
        filter: MessageFilter | None,
        checkpoint: CheckpointStore | None,
        after: int | None,
        dedupe: int,
        handler_backoff: tuple[float, float],
        reconnect_backoff: tuple[float, float],
        checkpoint_every: float,
    ) -> None:
        self.filter = filter or MessageFilter()
        self.checkpoint = checkpoint
        self.after = after
        self.position: int | None = None
        self._window: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._window_size = dedupe
        self._handler_backoff = handler_backoff
        self._reconnect_backoff = reconnect_backoff
        self._checkpoint_every = checkpoint_every
        self._unsaved = False
        self._saved_at = 0.0
        self._rng = random.Random()  # noqa: S311 - jitter
        self._stopping = False
        self.in_handler = False
        #: Messages handed to the handler (each success counts once).
        self.handled = 0
        #: False once a message arrived that the server would have filtered out: the
        #: server does not filter on type/subject (the watcher does, here).
        self.server_filters: bool | None = None

    def stopped(self) -> bool:
        return self._stopping

    def request_stop(self) -> None:
        self._stopping = True

    def start_position(self) -> int | None:
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        self.position = saved if saved is not None else self.after
        return self.position

    def wanted(self, message: Message) -> bool:
        """Whether to hand the message over (False: already done, or filtered out)."""
        if self.position is not None and message.position <= self.position:
            return False
        if not self.filter.server_side(message):
            if self.filter.types or self.filter.subjects:
                self.server_filters = False
            return False
        return self.filter.matches(message) and message.id not in self._window

    def done(self, message: Message, handled: bool, now: float) -> None:
        """The message is finished with: remember it, advance, save (at once after a
        handled one; at most every `checkpoint_every` seconds for skipped ones)."""
        if handled:
            self.handled += 1
            self._window[message.id] = None
            while len(self._window) > self._window_size:
                self._window.popitem(last=False)
        self.position = message.position
        self._unsaved = True
        if handled or now - self._saved_at >= self._checkpoint_every:
            self.save(now)

    def save(self, now: float) -> None:
        if self._unsaved and self.checkpoint is not None and self.position is not None:
            self.checkpoint.save(self.position)
            self._saved_at = now
        self._unsaved = False

    def handler_delay(self, attempt: int) -> float:
        first, longest = self._handler_backoff
        return min(longest, first * 2.0 ** (attempt - 1)) * self._rng.uniform(0.8, 1.2)

    def reconnect_delay(self, attempt: int) -> float:
        first, longest = self._reconnect_backoff
        return self._rng.uniform(0, min(longest, first * 2.0 ** (attempt - 1)))


class Watcher:
    """Follow the messages with a `Client`, calling `handler` for each (see the module)."""

    def __init__(
        self,
        client: Client,
        handler: Callable[[Message], object],
        *,
        filter: MessageFilter | None = None,
        checkpoint: CheckpointStore | None = None,
        after: int | None = None,
        dedupe: int = 10_000,
        handler_backoff: tuple[float, float] = (0.5, 30.0),
        reconnect_backoff: tuple[float, float] = (0.2, 10.0),
        checkpoint_every: float = 1.0,
        handle_signals: bool = True,
    ) -> None:
        self.client = client
        self.handler = handler
        self.state = _Core(
            filter=filter,
            checkpoint=checkpoint,
            after=after,
            dedupe=dedupe,
            handler_backoff=handler_backoff,
            reconnect_backoff=reconnect_backoff,
            checkpoint_every=checkpoint_every,
        )
        self.handle_signals = handle_signals
        self._wake = threading.Event()

    @property
    def position(self) -> int | None:
        return self.state.position

    def stop(self) -> None:
        """Stop after the message being handled; from another thread, at the next message
        or keep-alive (the server sends one every 15 s while idle)."""
        self.state.request_stop()
        self._wake.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop()
        if not self.state.in_handler:
            raise _Stopped

    def run(self) -> None:
        """Follow until `stop()` or SIGINT/SIGTERM (with `handle_signals`, in the main thread)."""
        previous: dict[int, object] = {}
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._on_signal)
        state = self.state
        try:
            state.start_position()
            failures = 0
            while not state.stopped():
                try:
                    for message in self._messages():
                        failures = 0
                        if message is not None:  # None: a keep-alive
                            self._dispatch(message)
                        if state.stopped():
                            break
                except _TRANSIENT as exc:
                    failures += 1
                    delay = state.reconnect_delay(failures)
                    log.warning(
                        "the message stream failed (%s); reconnecting in %.1f s", exc, delay
                    )
                    self._wake.wait(delay)
                else:
                    failures += 1  # the server ended the stream (shutting down)
                    self._wake.wait(state.reconnect_delay(failures))
        except _Stopped:
            pass
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)  # type: ignore[arg-type]
            state.save(float("inf"))

    def _messages(self) -> Iterator[Message | None]:
        f = self.state.filter
        return self.client._tail(
            self.state.position, follow=True, types=f.types, subjects=f.subjects
        )

    def _dispatch(self, message: Message) -> None:
        state = self.state
        handled = state.wanted(message)
        if handled:
            attempt = 0
            while True:
                state.in_handler = True
                try:
                    self.handler(message)
                    break
                except Exception:
                    attempt += 1
                    delay = state.handler_delay(attempt)
                    if state.stopped():
                        raise _Stopped from None  # not done: the next run starts with it
                    log.exception(
                        "the handler failed on message %s (position %d, attempt %d); "
                        "again in %.1f s",
                        message.id,
                        message.position,
                        attempt,
                        delay,
                    )
                finally:
                    state.in_handler = False
                if state.stopped() or self._wake.wait(delay):
                    raise _Stopped  # not done: the next run starts with this message
        state.done(message, handled, time.monotonic())


class AsyncWatcher:
    """The same with an `AsyncClient` and an async handler (`await watcher.run()`)."""

    def __init__(
        self,
        client: AsyncClient,
        handler: Callable[[Message], Awaitable[object]],
        *,
        filter: MessageFilter | None = None,
        checkpoint: CheckpointStore | None = None,
        after: int | None = None,
        dedupe: int = 10_000,
        handler_backoff: tuple[float, float] = (0.5, 30.0),
        reconnect_backoff: tuple[float, float] = (0.2, 10.0),
        checkpoint_every: float = 1.0,
        handle_signals: bool = True,
    ) -> None:
        self.client = client
        self.handler = handler
        self.state = _Core(
            filter=filter,
            checkpoint=checkpoint,
            after=after,
            dedupe=dedupe,
            handler_backoff=handler_backoff,
            reconnect_backoff=reconnect_backoff,
            checkpoint_every=checkpoint_every,
        )
        self.handle_signals = handle_signals
        self._scope: anyio.CancelScope | None = None
        self._wake = anyio.Event()

    @property
    def position(self) -> int | None:
        return self.state.position

    def stop(self) -> None:
        """Stop after the message being handled; at once while waiting for messages."""
        self.state.request_stop()
        self._wake.set()
        if self._scope is not None and not self.state.in_handler:
            self._scope.cancel()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                self.stop()

    async def run(self) -> None:
        state = self.state
        try:
            async with anyio.create_task_group() as tasks:
                if self.handle_signals and threading.current_thread() is threading.main_thread():
                    tasks.start_soon(self._signals)
                await self._follow()
                tasks.cancel_scope.cancel()
        finally:
            state.save(float("inf"))

    async def _follow(self) -> None:
        state = self.state
        state.start_position()
        failures = 0
        while not state.stopped():
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    f = state.filter
                    messages = self.client.messages(
                        state.position, follow=True, types=f.types, subjects=f.subjects
                    )
                    async for message in messages:
                        failures = 0
                        if not await self._dispatch(message):
                            return
                        if state.stopped():
                            return
                    failures += 1
                except _TRANSIENT as exc:
                    failures += 1
                    log.warning("the message stream failed (%s); reconnecting", exc)
                finally:
                    self._scope = None
            if state.stopped():
                return
            with anyio.move_on_after(state.reconnect_delay(failures)):
                await self._wake.wait()

    async def _dispatch(self, message: Message) -> bool:
        """False when stopped before the message was done."""
        state = self.state
        handled = state.wanted(message)
        if handled:
            attempt = 0
            while True:
                state.in_handler = True
                try:
                    with anyio.CancelScope(shield=True):
                        await self.handler(message)
                    break
                except Exception:
                    attempt += 1
                    delay = state.handler_delay(attempt)
                    log.exception(
                        "the handler failed on message %s (position %d, attempt %d); "
                        "again in %.1f s",
                        message.id,
                        message.position,
                        attempt,
                        delay,
                    )
                finally:
                    state.in_handler = False
                if state.stopped():
                    return False
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                if state.stopped():
                    return False
        state.done(message, handled, time.monotonic())
        return True
