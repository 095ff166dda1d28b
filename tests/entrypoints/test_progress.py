"""The progress display: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from entrypoints.progress import Progress


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_a_bar_with_rate_and_eta_is_redrawn_in_place() -> None:
    out, ticks = io.StringIO(), Ticks()
    bar = Progress("replay", 1000, out, tty=True, clock=ticks)
    ticks.now = 1.0
    bar.advance(250)
    ticks.now = 1.05
    bar.advance(10)  # within 0.1 s of the last drawing: not drawn
    ticks.now = 2.0
    bar.advance(250)
    bar.finish("done")
    text = out.getvalue()
    assert text.count("\r") == 2  # the end showed nothing new: not drawn again
    assert "\rreplay [#######.....................]  25%  250/1,000  250/s  ETA 0:00:03 " in text
    assert "510/1,000  255/s  ETA 0:00:02" in text
    assert text.endswith("\ndone\n")


def test_elsewhere_plain_lines_now_and_then() -> None:
    out, ticks = io.StringIO(), Ticks()
    progress = Progress("replay", 100, out, tty=False, clock=ticks)
    for second in range(1, 11):
        ticks.now = float(second)
        progress.advance(10)
    progress.finish("done")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "replay: 10/100 (10%), 10/s, ETA 0:00:09",
        "replay: 60/100 (60%), 10/s, ETA 0:00:04",
        "replay: 100/100 (100%), 10/s, ETA 0:00:00",
        "done",
    ]
