"""ULIDs: encoding, validation and the monotonic source (core.domain.ids)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.ids import (
    MAX_RANDOMNESS,
    MAX_TIMESTAMP_MS,
    UlidState,
    encode_ulid,
    is_ulid,
    needs_randomness,
    next_ulid,
    next_ulids,
    ulid_timestamp_ms,
)

timestamps = st.integers(0, MAX_TIMESTAMP_MS)
randomness = st.integers(0, MAX_RANDOMNESS)


def test_known_vectors() -> None:
    assert encode_ulid(0, 0) == "0" * 26
    assert encode_ulid(MAX_TIMESTAMP_MS, MAX_RANDOMNESS) == "7" + "Z" * 25
    # the ULID spec's example, 01ARZ3NDEKTSV4RRFFQ69G5FAV
    assert encode_ulid(1469922850259, 0).startswith("01ARZ3NDEK")
    assert ulid_timestamp_ms("01ARZ3NDEKTSV4RRFFQ69G5FAV") == 1469922850259


@pytest.mark.parametrize(
    ("ts", "rnd"), [(-1, 0), (MAX_TIMESTAMP_MS + 1, 0), (0, -1), (0, MAX_RANDOMNESS + 1)]
)
def test_out_of_range_parts_are_refused(ts: int, rnd: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_ulid(ts, rnd)


@given(timestamps, randomness)
def test_encoding_is_valid_and_keeps_the_timestamp(ts: int, rnd: int) -> None:
    ulid = encode_ulid(ts, rnd)
    assert is_ulid(ulid)
    assert ulid_timestamp_ms(ulid) == ts


@given(timestamps, randomness, timestamps, randomness)
def test_string_order_is_numeric_order(t1: int, r1: int, t2: int, r2: int) -> None:
    a, b = encode_ulid(t1, r1), encode_ulid(t2, r2)
    assert (a < b) == ((t1, r1) < (t2, r2))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 25,
        "0" * 27,
        "8" + "0" * 25,
        "0" * 25 + "I",
        "0" * 25 + "u",
        "01arz3ndektsv4rrffq69g5fav",
    ],
)
def test_malformed_ulids(text: str) -> None:
    assert not is_ulid(text)
    with pytest.raises(ValueError, match="not a ULID"):
        ulid_timestamp_ms(text)


def test_the_source_is_monotonic_within_a_millisecond_and_when_the_clock_steps_back() -> None:
    first, state = next_ulid(None, 1000, 5)
    second, state = next_ulid(state, 1000, 3)  # same ms: previous randomness + 1
    third, state = next_ulid(state, 999, 0)  # clock stepped back: still increasing
    assert first < second < third
    assert state[:2] == (1000, 7)
    later, _ = next_ulid(state, 1001, 0)
    assert later > third
    assert ulid_timestamp_ms(later) == 1001


def test_randomness_overflow_moves_to_the_next_millisecond() -> None:
    ulid, state = next_ulid(UlidState(1000, MAX_RANDOMNESS), 1000, 0)
    assert state[:2] == (1001, 0)
    assert ulid_timestamp_ms(ulid) == 1001


@given(st.lists(st.tuples(st.integers(0, 5000), randomness), min_size=1, max_size=50))
def test_any_clock_readings_give_strictly_increasing_ids(readings: list[tuple[int, int]]) -> None:
    state = None
    made = []
    for now, rnd in readings:
        ulid, state = next_ulid(state, now, rnd)
        made.append(ulid)
        # the short way (moving the last character on) always gives the full encoding
        assert ulid == state.text == encode_ulid(state.timestamp_ms, state.randomness)
    assert made == sorted(set(made))


def test_stepping_on_carries_over_the_last_character() -> None:
    _, state = next_ulid(None, 1000, 30)
    made = []
    for _ in range(3):
        text, state = next_ulid(state, 1000, 0)
        made.append(text)
    assert made == [encode_ulid(1000, r) for r in (31, 32, 33)]
    assert (made[0][-2:], made[1][-2:], made[2][-2:]) == ("0Z", "10", "11")  # 32 carries


def test_random_bits_are_needed_only_for_a_new_millisecond() -> None:
    assert needs_randomness(None, 1000)
    _, state = next_ulid(None, 1000, 5)
    assert not needs_randomness(state, 1000)
    assert not needs_randomness(state, 999)
    assert needs_randomness(state, 1001)


_NEAR_ULIDS = st.text(
    alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabc\x00é", min_size=24, max_size=28
)


@given(_NEAR_ULIDS | st.text(max_size=30))
def test_is_ulid_is_the_rule(text: str) -> None:
    """26 characters of Crockford's alphabet (no I, L, O, U), the first at most 7."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    expected = len(text) == 26 and text[0] <= "7" and all(c in alphabet for c in text)
    assert is_ulid(text) == expected


@given(
    st.none() | st.builds(lambda t, r: next_ulid(None, t, r)[1], timestamps, randomness),
    timestamps,
    randomness | st.sampled_from([0, MAX_RANDOMNESS, MAX_RANDOMNESS - 40, 31, 30]),
    st.integers(0, 100),
)
def test_many_ids_at_once_are_those_one_at_a_time_would_be(
    last: UlidState | None, now: int, rnd: int, count: int
) -> None:
    expected, state = [], last
    try:
        for _ in range(count):
            text, state = next_ulid(state, now, rnd)
            expected.append(text)
    except ValueError:  # the last millisecond's randomness ran out: so must the batch
        with pytest.raises(ValueError, match="timestamp out of range"):
            next_ulids(last, now, rnd, count)
        return
    made, after = next_ulids(last, now, rnd, count)
    assert made == expected
    assert after == state


def test_ids_past_the_last_millisecond_are_refused_one_at_a_time_and_at_once() -> None:
    last = next_ulid(None, MAX_TIMESTAMP_MS, MAX_RANDOMNESS - 1)[1]
    assert next_ulid(last, MAX_TIMESTAMP_MS, 0)[0] == encode_ulid(MAX_TIMESTAMP_MS, MAX_RANDOMNESS)
    with pytest.raises(ValueError, match="timestamp out of range"):
        next_ulids(last, MAX_TIMESTAMP_MS, 0, 2)


def test_many_ids_carry_and_run_out_of_randomness_like_one_at_a_time() -> None:
    for start in (MAX_RANDOMNESS - 3, 28, 0):
        last = next_ulid(None, 1000, start)[1]
        expected, state = [], last
        for _ in range(70):
            text, state = next_ulid(state, 1000, 0)
            expected.append(text)
        assert next_ulids(last, 1000, 0, 70) == (expected, state)
