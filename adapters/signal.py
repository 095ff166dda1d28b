"""What a delivery store rings when deliveries may have become due, for this process's
deliverers (`DeliveryStore.mark` and `wait`)."""

from __future__ import annotations

import anyio


class Signal:
    """Wakes the tasks waiting in `wait`, and counts its rings: a deliverer takes a `mark`
    before it claims and waits `since` it, so that a ring that came while it claimed is
    not lost (it returns at once)."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._rings = 0

    def mark(self) -> int:
        return self._rings

    def ring(self) -> None:
        self._rings += 1
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, seconds: float, since: int | None = None) -> None:
        if since is not None and since != self._rings:
            return
        event = self._event
        with anyio.move_on_after(seconds):
            await event.wait()
