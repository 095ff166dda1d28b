"""Progress of a long command on a terminal: a bar with the rate and the time left; plain
lines when the output is not a terminal (a log file, a pipe, CI).

    replay [################............] 41%  410,000/1,000,000  52,314/s  ETA 0:00:11

On a terminal the bar is redrawn in place (`\\r`) at most `TTY_EVERY` seconds apart;
otherwise a line is written every `PLAIN_EVERY` seconds. Both end with a summary line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TextIO

__all__ = ["Progress"]

TTY_EVERY: Final = 0.1
PLAIN_EVERY: Final = 5.0
WIDTH: Final = 28


def _clock() -> float:
    return time.monotonic()


def _eta(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Progress:
    """Counts work done against a total and shows it on `stream`."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = _clock,
    ) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._start = clock()
        self._shown = float("-inf")
        self._shown_done = -1  # what `done` was when last shown

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock()
        if now - self._shown >= (TTY_EVERY if self._tty else PLAIN_EVERY):
            self._show(now)

    def rate(self, now: float | None = None) -> float:
        spent = (self._clock() if now is None else now) - self._start
        return self.done / spent if spent > 0 else 0.0

    def _show(self, now: float) -> None:
        self._shown, self._shown_done = now, self.done
        rate = self.rate(now)
        share = self.done / self.total if self.total else 1.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        if self._tty:
            filled = int(WIDTH * min(share, 1.0))
            bar = "#" * filled + "." * (WIDTH - filled)
            text = (
                f"\r{self.label} [{bar}] {share:4.0%}  {self.done:,}/{self.total:,}  "
                f"{rate:,.0f}/s  ETA {_eta(left)} "
            )
        else:
            text = (
                f"{self.label}: {self.done}/{self.total} ({share:.0%}), {rate:.0f}/s, "
                f"ETA {_eta(left)}\n"
            )
        self._stream.write(text)
        self._stream.flush()

    def finish(self, summary: str) -> None:
        """The last state, then `summary` on a line of its own."""
        if self._shown_done != self.done:
            self._show(self._clock())
        self._stream.write(("\n" if self._tty and self._shown_done >= 0 else "") + summary + "\n")
        self._stream.flush()
