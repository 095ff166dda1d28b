"""Groups and the gate decision (DOMAIN.md, "Event receiver groups (gates)")."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.commands import CreateGroup, PatchGroup
from core.domain.errors import Invalid
from core.domain.groups import (
    MAX_GROUP_MEMBERS,
    check_members_exist,
    decide_record,
    is_complete,
    member_statuses,
    new_group,
    patch_group,
)
from core.domain.model import Event, EventRecorded, Group, GroupCompleted, Nvrpp

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KEY = Nvrpp(name="app", version="1.0", release="1", platform_id="x86_64", package="rpm")
OTHER_KEY = Nvrpp(name="app", version="1.1", release="1", platform_id="x86_64", package="rpm")


def ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter)}"


def make_group(members: tuple[str, ...], *, gid: str = "G", enabled: bool = True) -> Group:
    return new_group(
        CreateGroup(
            name="gate",
            type="release",
            version="1",
            enabled=enabled,
            event_receiver_ids=list(members),
        ),
        id=gid,
        tenant_id="T",
        now=NOW,
    )


def make_event(eid: str, receiver: str, success: bool, key: Nvrpp = KEY, tick: int = 0) -> Event:
    return Event(
        id=eid,
        tenant_id="T",
        name=key.name,
        version=key.version,
        release=key.release,
        platform_id=key.platform_id,
        package=key.package,
        description="",
        payload={},
        success=success,
        event_receiver_id=receiver,
        created_at=NOW + timedelta(milliseconds=tick),
    )


def completions(decided: Sequence[object]) -> list[GroupCompleted]:
    return [d for d in decided if isinstance(d, GroupCompleted)]


# --- group rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "ok"), [(0, False), (1, True), (99, True), (100, True), (101, False)]
)
def test_member_count_boundaries(count: int, ok: bool) -> None:
    members = tuple(f"R{i}" for i in range(count))
    if ok:
        assert len(make_group(members).event_receiver_ids) == count
    else:
        with pytest.raises(Invalid) as info:
            make_group(members)
        assert info.value.errors[0].field == "/event_receiver_ids"


def test_duplicate_members_are_refused_with_their_index() -> None:
    with pytest.raises(Invalid) as info:
        make_group(("A", "B", "A"))
    assert [e.field for e in info.value.errors] == ["/event_receiver_ids/2"]


@pytest.mark.parametrize("field", ["name", "type", "version"])
@pytest.mark.parametrize(
    ("value", "ok"),
    [("x" * 254, True), ("x" * 255, True), ("x" * 256, False), ("  ", False), ("", False)],
)
def test_group_name_fields(field: str, value: str, ok: bool) -> None:
    base = {"name": "g", "type": "t", "version": "1", "event_receiver_ids": ["A"]}
    cmd = CreateGroup(**{**base, field: value})  # type: ignore[arg-type]
    if ok:
        new_group(cmd, id="G", tenant_id="T", now=NOW)
    else:
        with pytest.raises(Invalid) as info:
            new_group(cmd, id="G", tenant_id="T", now=NOW)
        assert info.value.errors[0].field == f"/{field}"


@pytest.mark.parametrize(("length", "ok"), [(4095, True), (4096, True), (4097, False)])
def test_group_description_limit(length: int, ok: bool) -> None:
    cmd = CreateGroup(
        name="g", type="t", version="1", description="d" * length, event_receiver_ids=["A"]
    )
    if ok:
        assert new_group(cmd, id="G", tenant_id="T", now=NOW).description == "d" * length
    else:
        with pytest.raises(Invalid):
            new_group(cmd, id="G", tenant_id="T", now=NOW)


def test_every_error_is_reported_at_once() -> None:
    cmd = CreateGroup(name=" ", type="", version="v" * 256, event_receiver_ids=[])
    with pytest.raises(Invalid) as info:
        new_group(cmd, id="G", tenant_id="T", now=NOW)
    assert {e.field for e in info.value.errors} == {
        "/name",
        "/type",
        "/version",
        "/event_receiver_ids",
    }


def test_patch_adds_removes_toggles_and_describes() -> None:
    group = make_group(("A", "B"))
    later = NOW + timedelta(seconds=1)
    patched = patch_group(
        group,
        PatchGroup(
            enabled=False, description="new", add_receiver_ids=["C"], remove_receiver_ids=["A"]
        ),
        now=later,
    )
    assert patched.event_receiver_ids == ("B", "C")
    assert (patched.enabled, patched.description, patched.updated_at) == (False, "new", later)
    assert patched.created_at == group.created_at


def test_patch_that_changes_nothing_returns_the_same_group() -> None:
    group = make_group(("A",))
    assert patch_group(group, PatchGroup(enabled=True), now=NOW + timedelta(1)) is group


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (PatchGroup(add_receiver_ids=["A"]), "/add_receiver_ids/0"),
        (PatchGroup(remove_receiver_ids=["Z"]), "/remove_receiver_ids/0"),
        (PatchGroup(add_receiver_ids=["C", "C"]), "/add_receiver_ids/1"),
        (PatchGroup(remove_receiver_ids=["A", "B"]), "/event_receiver_ids"),
        (PatchGroup(description="d" * 4097), "/description"),
    ],
)
def test_patch_refusals(patch: PatchGroup, field: str) -> None:
    with pytest.raises(Invalid) as info:
        patch_group(make_group(("A", "B")), patch, now=NOW)
    assert field in [e.field for e in info.value.errors]


def test_patch_cannot_grow_past_the_member_limit() -> None:
    group = make_group(tuple(f"R{i}" for i in range(MAX_GROUP_MEMBERS)))
    with pytest.raises(Invalid):
        patch_group(group, PatchGroup(add_receiver_ids=["extra"]), now=NOW)
    swapped = patch_group(
        group, PatchGroup(add_receiver_ids=["extra"], remove_receiver_ids=["R0"]), now=NOW
    )
    assert len(swapped.event_receiver_ids) == MAX_GROUP_MEMBERS


def test_unknown_members_are_named() -> None:
    with pytest.raises(Invalid) as info:
        check_members_exist(["A", "X"], {"A"}, "/event_receiver_ids")
    assert [e.field for e in info.value.errors] == ["/event_receiver_ids/1"]


# --- the gate, by example -----------------------------------------------------------------


def test_fires_once_when_the_last_member_succeeds() -> None:
    group = make_group(("A", "B"))
    a = make_event("e1", "A", True)
    first = decide_record([a], [group], {}, new_id=ids("c"))
    assert completions(first) == []
    b = make_event("e2", "B", True)
    second = decide_record([b], [group], {("A", KEY): a}, new_id=ids("c"))
    [fired] = completions(second)
    assert fired.completion.group_id == "G"
    assert fired.completion.triggering_event_id == "e2"
    assert fired.completion.member_event_ids == ("e1", "e2")
    assert fired.completion.key == KEY
    assert isinstance(second[0], EventRecorded)


def test_no_refire_while_complete_and_refire_after_failure() -> None:
    group = make_group(("A", "B"))
    history = [
        make_event("e1", "A", True),
        make_event("e2", "B", True),  # fires
        make_event("e3", "A", True),  # already complete: no fire
        make_event("e4", "B", False),  # incomplete
        make_event("e5", "B", True),  # complete again: fires
    ]
    decided = decide_record(history, [group], {}, new_id=ids("c"))
    assert [c.completion.triggering_event_id for c in completions(decided)] == ["e2", "e5"]


def test_disabled_group_never_fires() -> None:
    group = make_group(("A",), enabled=False)
    assert (
        completions(decide_record([make_event("e1", "A", True)], [group], {}, new_id=ids("c")))
        == []
    )


def test_keys_are_independent_and_compared_exactly() -> None:
    group = make_group(("A", "B"))
    lower = Nvrpp(name="APP", version="1.0", release="1", platform_id="x86_64", package="rpm")
    decided = decide_record(
        [
            make_event("e1", "A", True),
            make_event("e2", "B", True, OTHER_KEY),
            make_event("e3", "B", True, lower),
        ],
        [group],
        {},
        new_id=ids("c"),
    )
    assert completions(decided) == []


def test_another_groups_member_never_blocks_firing() -> None:
    small = make_group(("A",), gid="small")
    big = make_group(("A", "B"), gid="big")
    decided = decide_record([make_event("e1", "A", True)], [small, big], {}, new_id=ids("c"))
    assert [c.completion.group_id for c in completions(decided)] == ["small"]


def test_status_tells_why_a_gate_has_not_fired() -> None:
    group = make_group(("A", "B", "C"))
    a, b = make_event("e1", "A", True), make_event("e2", "B", False)
    latest = {("A", KEY): a, ("B", KEY): b}
    statuses = member_statuses(group, KEY, latest)
    assert [(s.event_receiver_id, s.passing, s.latest_event) for s in statuses] == [
        ("A", True, a),
        ("B", False, b),
        ("C", False, None),
    ]
    assert not is_complete(group, KEY, latest)


# --- the gate against a brute-force oracle -------------------------------------------------

RECEIVERS = ("A", "B", "C", "D")
KEYS = (KEY, OTHER_KEY)


class Step(msgspec.Struct, frozen=True):
    """Either an event (receiver, key index, success) or a patch to one group."""

    receiver: str | None = None
    key: int = 0
    success: bool = True
    group: int = 0
    patch: PatchGroup | None = None


groups_strategy = st.lists(
    st.tuples(
        st.lists(st.sampled_from(RECEIVERS), min_size=1, max_size=4, unique=True),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
)
event_step = st.builds(
    Step,
    receiver=st.sampled_from(RECEIVERS),
    key=st.integers(0, len(KEYS) - 1),
    success=st.booleans(),
)
patch_step = st.builds(
    Step,
    group=st.integers(0, 3),
    patch=st.builds(
        PatchGroup,
        enabled=st.none() | st.booleans(),
        add_receiver_ids=st.lists(st.sampled_from(RECEIVERS), max_size=1),
        remove_receiver_ids=st.lists(st.sampled_from(RECEIVERS), max_size=1),
    ),
)


def oracle_fires(
    history: list[tuple[Event, list[Group]]],
) -> list[tuple[str, str]]:
    """(triggering event id, group id) for every firing, by recomputing from the whole history."""

    def complete(group: Group, key: Nvrpp, upto: int) -> bool:
        if not group.enabled:
            return False
        for member in group.event_receiver_ids:
            latest = None
            for event, _ in history[:upto]:
                if event.event_receiver_id == member and event.key == key:
                    latest = event
            if latest is None or not latest.success:
                return False
        return True

    fired = []
    for index, (event, groups_then) in enumerate(history):
        for group in groups_then:
            if event.event_receiver_id not in group.event_receiver_ids:
                continue
            if not complete(group, event.key, index) and complete(group, event.key, index + 1):
                fired.append((event.id, group.id))
    return fired


@given(groups_strategy, st.lists(event_step | patch_step, max_size=40))
def test_gate_equals_brute_force_oracle(
    configs: list[tuple[list[str], bool]], steps: list[Step]
) -> None:
    groups = [make_group(tuple(m), gid=f"G{i}", enabled=e) for i, (m, e) in enumerate(configs)]
    latest: dict[tuple[str, Nvrpp], Event] = {}
    history: list[tuple[Event, list[Group]]] = []
    fired: list[tuple[str, str]] = []
    new_id = ids("c")
    completion_ids: list[str] = []
    for tick, step in enumerate(steps):
        if step.patch is not None:
            index = step.group % len(groups)
            with contextlib.suppress(Invalid):
                groups[index] = patch_group(groups[index], step.patch, now=NOW)
            continue
        assert step.receiver is not None
        event = make_event(f"e{tick}", step.receiver, step.success, KEYS[step.key], tick)
        history.append((event, list(groups)))
        for decided in decide_record([event], groups, latest, new_id=new_id):
            if isinstance(decided, GroupCompleted):
                fired.append((decided.completion.triggering_event_id, decided.completion.group_id))
                completion_ids.append(decided.completion.id)
        latest[(event.event_receiver_id, event.key)] = event
    assert fired == oracle_fires(history)
    assert len(set(completion_ids)) == len(completion_ids)


@given(groups_strategy, st.lists(event_step, max_size=30))
def test_a_batch_decides_exactly_like_single_writes(
    configs: list[tuple[list[str], bool]], steps: list[Step]
) -> None:
    groups = [make_group(tuple(m), gid=f"G{i}", enabled=e) for i, (m, e) in enumerate(configs)]
    events = []
    for tick, step in enumerate(steps):
        assert step.receiver is not None
        events.append(make_event(f"e{tick}", step.receiver, step.success, KEYS[step.key], tick))

    batch = decide_record(events, groups, {}, new_id=ids("c"))

    singles: list[object] = []
    latest: dict[tuple[str, Nvrpp], Event] = {}
    single_ids = ids("c")
    for event in events:
        singles.extend(decide_record([event], groups, latest, new_id=single_ids))
        latest[(event.event_receiver_id, event.key)] = event
    assert batch == singles
