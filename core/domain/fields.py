"""Rules for text fields shared by receivers, events, groups, tenants and keys; and for
times that must exist in UTC.

No text field holds the NUL character (U+0000): PostgreSQL cannot store it in a text
column and SQLite can, so refusing it everywhere keeps the backends in agreement (and
keeps it out of every client that ends strings at it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.domain.errors import FieldError

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 4096
NUL = "\x00"
NUL_MESSAGE = "must not contain the NUL character (U+0000)"


def is_plain_name(value: str) -> bool:
    """Whether `check_name` would accept the value (without building a field's name)."""
    return 0 < len(value) <= MAX_NAME_LENGTH and not value.isspace() and NUL not in value


def are_plain_names(*values: str) -> bool:
    """Whether `check_name` would accept every one of the values: `is_plain_name` for
    several at once (an event's five NVRPP fields), with one scan for NUL."""
    for value in values:
        if not 0 < len(value) <= MAX_NAME_LENGTH or value.isspace():
            return False
    return NUL not in "".join(values)


def check_name(errors: list[FieldError], field: str, value: str) -> None:
    """Non-blank after trimming, at most 255 characters, no NUL (the stored value is kept as
    given)."""
    if not value.strip():
        errors.append(FieldError(field, "must not be blank"))
    elif len(value) > MAX_NAME_LENGTH:
        errors.append(FieldError(field, f"must be at most {MAX_NAME_LENGTH} characters"))
    elif NUL in value:
        errors.append(FieldError(field, NUL_MESSAGE))


def check_description(errors: list[FieldError], field: str, value: str) -> None:
    """May be empty; at most 4096 characters, no NUL."""
    if len(value) > MAX_DESCRIPTION_LENGTH:
        errors.append(FieldError(field, f"must be at most {MAX_DESCRIPTION_LENGTH} characters"))
    elif NUL in value:
        errors.append(FieldError(field, NUL_MESSAGE))


def in_utc(value: datetime) -> datetime | None:
    """`value` in UTC; None when it has no time zone or has no UTC time (a date near year 1
    or 9999 whose offset moves it out of the years 1 to 9999)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None
