"""Rules for text fields shared by receivers, events and groups."""

from __future__ import annotations

from core.domain.errors import FieldError

MAX_NAME_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 4096


def is_plain_name(value: str) -> bool:
    """Whether `check_name` would accept the value (without building a field's name)."""
    return 0 < len(value) <= MAX_NAME_LENGTH and not value.isspace()


def check_name(errors: list[FieldError], field: str, value: str) -> None:
    """Non-blank after trimming, at most 255 characters (the stored value is kept as given)."""
    if not value.strip():
        errors.append(FieldError(field, "must not be blank"))
    elif len(value) > MAX_NAME_LENGTH:
        errors.append(FieldError(field, f"must be at most {MAX_NAME_LENGTH} characters"))


def check_description(errors: list[FieldError], field: str, value: str) -> None:
    """May be empty; at most 4096 characters."""
    if len(value) > MAX_DESCRIPTION_LENGTH:
        errors.append(FieldError(field, f"must be at most {MAX_DESCRIPTION_LENGTH} characters"))
