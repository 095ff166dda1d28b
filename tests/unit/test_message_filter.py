"""The live tail's filter: which messages pass, and which filters are refused (at the limits)."""

from __future__ import annotations

import pytest

from core.domain.errors import Invalid
from core.usecases.messages import MAX_FILTER_VALUES, MessageFilter, message_filter

ID_A = "01J00000000000000000000000"
ID_B = "01J00000000000000000000001"


@pytest.mark.parametrize(
    ("types", "subjects", "passes"),
    [
        ([], [], True),
        (["ci.build"], [], True),
        (["ci.test", "ci.build"], [], True),
        (["ci.test"], [], False),
        ([], [ID_A], True),
        ([], [ID_B], False),
        (["ci.build"], [ID_B, ID_A], True),
        (["ci.build"], [ID_B], False),
        (["ci.test"], [ID_A], False),
    ],
)
def test_a_message_passes_when_its_type_and_its_subject_are_among_those_named(
    types: list[str], subjects: list[str], passes: bool
) -> None:
    class Message:  # the two attributes a filter reads
        type = "ci.build"
        subject = ID_A

    assert message_filter(types, subjects).matches(Message()) is passes  # type: ignore[arg-type]


def test_the_limits_are_accepted_at_their_boundary() -> None:
    most = [f"t{n}" for n in range(MAX_FILTER_VALUES - 1)] + ["x" * 255]
    found = message_filter(most, [ID_A] * MAX_FILTER_VALUES)
    assert found == MessageFilter(types=frozenset(most), subjects=frozenset({ID_A}))


@pytest.mark.parametrize(
    ("types", "subjects", "fields"),
    [
        ([""], [], ["type"]),
        (["x" * 256], [], ["type"]),
        (["t"] * (MAX_FILTER_VALUES + 1), [], ["type"]),
        ([], ["nope"], ["subject"]),
        ([], [ID_A.lower()], ["subject"]),
        ([], [ID_A] * (MAX_FILTER_VALUES + 1), ["subject"]),
        ([""], ["nope"], ["type", "subject"]),
    ],
)
def test_a_filter_out_of_bounds_is_refused_naming_its_field(
    types: list[str], subjects: list[str], fields: list[str]
) -> None:
    with pytest.raises(Invalid) as refused:
        message_filter(types, subjects)
    assert [e.field for e in refused.value.errors] == fields
