"""Local commits: a Store that tells who waits when one of this process's writes committed.

The delivery dispatcher waits on it between passes (`wait`), so that a message recorded
by this process is dispatched at once rather than at the next poll. Writes of other
processes are not heard here: the dispatcher's poll finds them (a cross-process feed,
such as PostgreSQL LISTEN/NOTIFY on commits, can stand in for this: anything with
`wait(seconds)` does).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType

import anyio

from core.ports import ReadTx, Rebuild, Store, WriteTx

__all__ = ["CommitSignal", "SignallingStore"]


class CommitSignal:
    """Rings every waiter at once; a waiter that arrives later waits for the next ring."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, seconds: float) -> None:
        """Return at the next ring, or after `seconds`."""
        event = self._event
        with anyio.move_on_after(seconds):
            await event.wait()


class _Ringing:
    """A write transaction's context that rings the signal when it ends cleanly."""

    __slots__ = ("_inner", "_signal")

    def __init__(self, inner: AbstractAsyncContextManager[WriteTx], signal: CommitSignal) -> None:
        self._inner = inner
        self._signal = signal

    async def __aenter__(self) -> WriteTx:
        return await self._inner.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        handled = await self._inner.__aexit__(kind, error, traceback)
        if kind is None:
            self._signal.ring()
        return handled


class SignallingStore:
    """The Store port of `inner`, ringing `signal` after each write transaction commits."""

    def __init__(self, inner: Store, signal: CommitSignal) -> None:
        self.inner = inner
        self.signal = signal

    def read(self) -> AbstractAsyncContextManager[ReadTx]:
        return self.inner.read()

    def write(self, tenant_id: str) -> AbstractAsyncContextManager[WriteTx]:
        return _Ringing(self.inner.write(tenant_id), self.signal)

    def rebuild(self) -> AbstractAsyncContextManager[Rebuild]:
        return self.inner.rebuild()

    async def close(self) -> None:
        await self.inner.close()
