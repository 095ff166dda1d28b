"""ULIDs as plain strings: 26 characters of Crockford base32, time-sortable.

Generation needs a clock and randomness, so the core only encodes and steps a
monotonic state; an adapter feeds it the time and the random bits.
"""

from __future__ import annotations

from typing import NamedTuple

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_LENGTH = 26
MAX_TIMESTAMP_MS = (1 << 48) - 1
MAX_RANDOMNESS = (1 << 80) - 1
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_CHARACTERS = frozenset(ALPHABET)
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # 10 bits -> 2 characters
_PAIR_SHIFTS = range(120, -1, -10)


def encode_ulid(timestamp_ms: int, randomness: int) -> str:
    """The ULID for a 48-bit millisecond timestamp and 80 random bits."""
    if not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise ValueError("ULID timestamp out of range")
    if not 0 <= randomness <= MAX_RANDOMNESS:
        raise ValueError("ULID randomness out of range")
    # 128 bits with two zero bits in front make 26 characters: 13 pairs of 10 bits.
    value = (timestamp_ms << 80) | randomness
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def is_ulid(text: str) -> bool:
    """True for a canonical (upper-case) ULID."""
    return len(text) == ULID_LENGTH and text[0] <= "7" and _CHARACTERS.issuperset(text)


def ulid_timestamp_ms(ulid: str) -> int:
    """The millisecond timestamp a ULID starts with."""
    if not is_ulid(ulid):
        raise ValueError(f"not a ULID: {ulid!r}")
    value = 0
    for c in ulid[:10]:
        value = (value << 5) | _INDEX[c]
    return value


class UlidState(NamedTuple):
    """The last ULID handed out, as its two parts and its text."""

    timestamp_ms: int
    randomness: int
    text: str = ""


_tuple_new = tuple.__new__  # `UlidState(...)` without the NamedTuple's Python-level __new__


def _state(timestamp_ms: int, randomness: int, text: str) -> UlidState:
    state: UlidState = _tuple_new(UlidState, (timestamp_ms, randomness, text))
    return state


def needs_randomness(last: UlidState | None, now_ms: int) -> bool:
    """Whether `next_ulid` will use fresh random bits (a new millisecond), or ignore them."""
    return last is None or now_ms > last.timestamp_ms


def next_ulid(last: UlidState | None, now_ms: int, randomness: int) -> tuple[str, UlidState]:
    """Step a monotonic ULID source.

    Within one millisecond (or if the clock stepped back) the previous
    randomness is incremented, so ids from one source always sort in the order
    they were made. Then only the last character changes, unless the increment
    carries over it: the text is the previous one with its last character moved on.
    """
    if last is not None and now_ms <= last.timestamp_ms:
        now_ms = last.timestamp_ms
        randomness = last.randomness + 1
        if randomness > MAX_RANDOMNESS:
            now_ms, randomness = now_ms + 1, 0
        elif randomness & 31 and last.text:  # no carry: one character moves on
            text = last.text[:-1] + ALPHABET[randomness & 31]
            return text, _state(now_ms, randomness, text)
    text = encode_ulid(now_ms, randomness)
    return text, _state(now_ms, randomness, text)


def next_ulids(
    last: UlidState | None, now_ms: int, randomness: int, count: int
) -> tuple[list[str], UlidState | None]:
    """`count` ULIDs at once: what `count` calls of `next_ulid` at the same time make (the
    first uses `randomness` if it starts a new millisecond; the others step on, most of
    them by their last character alone)."""
    if count <= 0:
        return [], last
    text, state = next_ulid(last, now_ms, randomness)
    made = [text]
    timestamp_ms, step = state.timestamp_ms, state.randomness
    prefix = text[:-1]
    for _ in range(count - 1):
        step += 1
        if step & 31 and step <= MAX_RANDOMNESS:  # no carry: one character moves on
            text = prefix + ALPHABET[step & 31]
        else:  # a carry (or the randomness runs out): as `next_ulid` does it
            text, state = next_ulid(_state(timestamp_ms, step - 1, text), timestamp_ms, 0)
            timestamp_ms, step = state.timestamp_ms, state.randomness
            prefix = text[:-1]
        made.append(text)
    return made, _state(timestamp_ms, step, text)
