"""The soak's flatness rule (bench/harness.py `soak_flatness`): the median of the last
third of the steady period's samples against the first third's, the band beside it."""

from __future__ import annotations

import pytest

from bench.harness import soak_flatness

START, END, LIMIT = 10.0, 100.0, 0.10  # thirds: (10, 40], (40, 70], (70, 100]


def _samples(
    rss: list[float], p99: list[float], open_files: float = 12.0
) -> list[dict[str, float]]:
    """A sample every 10 s after the warm-up window, as the soak takes them: at 20 ... 100."""
    return [
        {"at": START + 10.0 * (i + 1), "rss": r, "open_files": open_files, "p99": p}
        for i, (r, p) in enumerate(zip(rss, p99, strict=True))
    ]


def test_a_steady_run_is_flat_however_its_windows_move() -> None:
    # windows' p99 jumping about by half, no trend: the band says so, the medians do not move
    samples = _samples([100.0] * 9, [5.0, 6.0, 4.0, 7.5, 3.5, 5.0, 4.5, 5.0, 6.0])
    found = soak_flatness(samples, START, END, LIMIT)
    assert {key: entry["flat"] for key, entry in found.items()} == {
        "rss": True,
        "open_files": True,
        "p99": True,
    }
    assert found["p99"]["first"] == 5.0  # the samples at 20, 30 and 40 s
    assert found["p99"]["last"] == 5.0  # at 80, 90 and 100 s
    assert found["p99"]["drift"] == 0.0
    assert found["p99"]["band"] == pytest.approx(2.5 / 5.0)  # 7.5, from 5.0
    assert found["rss"]["band"] == 0.0


def test_memory_that_grows_is_not_flat() -> None:
    samples = _samples([100.0, 102.0, 104.0, 106.0, 108.0, 110.0, 112.0, 114.0, 116.0], [5.0] * 9)
    found = soak_flatness(samples, START, END, LIMIT)
    assert found["rss"]["first"] == 102.0
    assert found["rss"]["last"] == 114.0
    assert found["rss"]["drift"] == pytest.approx(12.0 / 102.0)
    assert found["rss"]["flat"] is False
    assert found["open_files"]["flat"] is True


def test_a_tail_that_grows_is_not_flat_one_slow_window_is() -> None:
    growing = soak_flatness(
        _samples([100.0] * 9, [5.0, 5.0, 5.0, 5.5, 5.5, 5.5, 6.0, 6.0, 6.0]), START, END, LIMIT
    )
    assert growing["p99"]["drift"] == pytest.approx(0.2)
    assert growing["p99"]["flat"] is False
    burst = soak_flatness(_samples([100.0] * 9, [5.0] * 7 + [80.0, 5.0]), START, END, LIMIT)
    assert burst["p99"]["drift"] == 0.0  # the median of 80, 5 and 5 is 5...
    assert burst["p99"]["flat"] is True
    assert burst["p99"]["band"] == pytest.approx(15.0)  # ...and the band shows the burst


@pytest.mark.parametrize(("last", "flat"), [(5.5, True), (5.6, False), (4.5, True), (4.4, False)])
def test_the_limit_holds_either_way(last: float, flat: bool) -> None:
    found = soak_flatness(_samples([5.0] * 6 + [last] * 3, [5.0] * 9), START, END, LIMIT)
    assert found["rss"]["drift"] == pytest.approx((last - 5.0) / 5.0)
    assert found["rss"]["flat"] is flat


def test_samples_outside_the_steady_period_do_not_count() -> None:
    samples = _samples([100.0] * 9, [5.0] * 9)
    warm_up = {"at": START, "rss": 500.0, "open_files": 12.0, "p99": 90.0}
    after = {"at": END + 1, "rss": 500.0, "open_files": 12.0, "p99": 90.0}
    found = soak_flatness([warm_up, *samples, after], START, END, LIMIT)
    assert found["rss"]["drift"] == 0.0
    assert found["p99"]["band"] == 0.0
