"""Secret rotation: the transition table, the plan, and properties over random schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.errors import Conflict
from core.domain.rotation import (
    TRANSITIONS,
    RotationEvent,
    RotationPolicy,
    SecretVersion,
    Step,
    VersionState,
    apply,
    next_due,
    plan,
    published,
    signing,
    verifies,
    verifying,
)

T0 = datetime(2024, 5, 1, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = RotationPolicy(rotate_every=30 * DAY, grace=2 * DAY, prepublish=DAY)

A, C, D, R = (
    RotationEvent.ACTIVATE,
    RotationEvent.CREATE,
    RotationEvent.DEMOTE,
    RotationEvent.RETIRE,
)
PENDING, ACTIVE, VERIFY_ONLY, RETIRED = (
    VersionState.PENDING,
    VersionState.ACTIVE,
    VersionState.VERIFY_ONLY,
    VersionState.RETIRED,
)


def run(
    versions: tuple[SecretVersion, ...],
    now: datetime,
    policy: RotationPolicy = POLICY,
    *,
    force: bool = False,
) -> tuple[tuple[Step, ...], tuple[SecretVersion, ...]]:
    steps = plan(versions, policy, now, force=force)
    return steps, apply(versions, steps, policy=policy, now=now)


def states(versions: tuple[SecretVersion, ...]) -> dict[int, VersionState]:
    return {v.version: v.state for v in versions}


# --- the table -------------------------------------------------------------------------------


def test_transition_table() -> None:
    assert dict(TRANSITIONS) == {
        (None, C): PENDING,
        (PENDING, A): ACTIVE,
        (PENDING, R): RETIRED,
        (ACTIVE, D): VERIFY_ONLY,
        (VERIFY_ONLY, R): RETIRED,
    }
    # Nothing leaves RETIRED; nothing goes back to PENDING or ACTIVE from later states.
    assert not [k for k in TRANSITIONS if k[0] == RETIRED]
    order = [None, PENDING, ACTIVE, VERIFY_ONLY, RETIRED]
    for (before, _), after in TRANSITIONS.items():
        assert order.index(after) > order.index(before)


@pytest.mark.parametrize(
    ("state", "event"),
    [(s, e) for s in [None, *VersionState] for e in RotationEvent if (s, e) not in TRANSITIONS],
)
def test_every_other_transition_is_refused(
    state: VersionState | None, event: RotationEvent
) -> None:
    versions: tuple[SecretVersion, ...] = ()
    if state is not None:
        versions = (SecretVersion(version=1, state=state, created_at=T0, activated_at=T0),)
    with pytest.raises(Conflict):
        apply(versions, [Step(event, 1)], policy=POLICY, now=T0)


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="rotate_every"):
        RotationPolicy(rotate_every=timedelta(0), grace=DAY)
    with pytest.raises(ValueError, match="grace"):
        RotationPolicy(rotate_every=DAY, grace=-DAY)
    with pytest.raises(ValueError, match="prepublish"):
        RotationPolicy(rotate_every=DAY, grace=DAY, prepublish=DAY)


# --- the plan, step by step ------------------------------------------------------------------


def test_a_life_cycle() -> None:
    # First start: create and activate at once.
    steps, vs = run((), T0)
    assert steps == (Step(C, 1), Step(A, 1))
    assert signing(vs) == vs[0]
    assert vs[0].activated_at == T0
    assert next_due(vs, POLICY) == T0 + 29 * DAY

    # Nothing to do until prepublish time.
    assert plan(vs, POLICY, T0 + 29 * DAY - timedelta(seconds=1)) == ()

    # Prepublish: version 2 pending, published, not signing, not verifying.
    steps, vs = run(vs, T0 + 29 * DAY)
    assert steps == (Step(C, 2),)
    assert states(vs) == {1: ACTIVE, 2: PENDING}
    assert [v.version for v in published(vs, T0 + 29 * DAY)] == [2, 1]
    assert [v.version for v in verifying(vs, T0 + 29 * DAY)] == [1]
    assert next_due(vs, POLICY) == T0 + 30 * DAY

    # The term ends: 2 signs, 1 verifies for its grace.
    t = T0 + 30 * DAY
    steps, vs = run(vs, t)
    assert steps == (Step(A, 2), Step(D, 1))
    assert states(vs) == {1: VERIFY_ONLY, 2: ACTIVE}
    assert vs[0].verify_until == t + 2 * DAY
    assert [v.version for v in verifying(vs, t + 2 * DAY - timedelta(microseconds=1))] == [2, 1]
    assert [v.version for v in verifying(vs, t + 2 * DAY)] == [2]
    assert next_due(vs, POLICY) == t + 2 * DAY

    # Grace over: 1 retires.
    steps, vs = run(vs, t + 2 * DAY)
    assert steps == (Step(R, 1),)
    assert states(vs) == {1: RETIRED, 2: ACTIVE}


def test_a_late_worker_does_not_stretch_the_grace() -> None:
    _, vs = run((), T0)
    _, vs = run(vs, T0 + 30 * DAY)
    # The worker sleeps for a week: version 1 stopped verifying at its grace end anyway.
    assert not verifies(vs[0], T0 + 32 * DAY)
    assert [v.version for v in verifying(vs, T0 + 37 * DAY)] == [2]


def test_a_late_rotation_counts_grace_from_when_it_happens() -> None:
    _, vs = run((), T0)
    late = T0 + 45 * DAY
    steps, vs = run(vs, late)
    assert steps == (Step(C, 2), Step(A, 2), Step(D, 1))
    assert vs[0].verify_until == late + 2 * DAY


def test_forced_rotation_uses_the_published_pending_version() -> None:
    _, vs = run((), T0)
    steps, vs = run(vs, T0 + DAY, force=True)
    assert steps == (Step(C, 2), Step(A, 2), Step(D, 1))
    _, vs = run(vs, T0 + 31 * DAY - DAY)  # prepublish of 3 (2 activated at T0 + 1 day)
    assert states(vs)[3] == PENDING
    steps, vs = run(vs, T0 + 30 * DAY + timedelta(hours=1), force=True)
    assert steps == (Step(A, 3), Step(D, 2))


def test_zero_grace_retires_at_once() -> None:
    policy = RotationPolicy(rotate_every=DAY, grace=timedelta(0))
    _, vs = run((), T0, policy)
    steps, vs = run(vs, T0 + DAY, policy)
    assert steps == (Step(C, 2), Step(A, 2), Step(D, 1), Step(R, 1))
    assert states(vs) == {1: RETIRED, 2: ACTIVE}


def test_recovery_without_an_active_version() -> None:
    versions = (
        SecretVersion(version=1, state=PENDING, created_at=T0),
        SecretVersion(version=2, state=PENDING, created_at=T0),
    )
    steps, vs = run(versions, T0)
    assert steps == (Step(A, 2), Step(R, 1))
    assert signing(vs) == vs[1]


def test_two_active_versions_are_a_conflict() -> None:
    both = tuple(
        SecretVersion(version=n, state=ACTIVE, created_at=T0, activated_at=T0) for n in (1, 2)
    )
    with pytest.raises(Conflict):
        plan(both, POLICY, T0)
    with pytest.raises(Conflict):
        signing(both)


def test_pending_and_retired_never_verify() -> None:
    for state in (PENDING, RETIRED):
        version = SecretVersion(
            version=1, state=state, created_at=T0, activated_at=T0, verify_until=T0 + DAY
        )
        assert not verifies(version, T0)


# --- properties over random schedules --------------------------------------------------------

minutes = st.integers(min_value=1, max_value=10_000).map(lambda m: timedelta(minutes=m))


@st.composite
def policies(draw: st.DrawFn) -> RotationPolicy:
    every = draw(minutes)
    prepublish = draw(st.integers(min_value=0, max_value=every // timedelta(minutes=1) - 1))
    return RotationPolicy(
        rotate_every=every,
        grace=draw(st.integers(min_value=0, max_value=20_000).map(lambda m: timedelta(minutes=m))),
        prepublish=timedelta(minutes=prepublish),
    )


# A schedule: (minutes since the previous instant, does the worker run then?, forced?)
schedules = st.lists(
    st.tuples(st.integers(min_value=0, max_value=20_000), st.booleans(), st.booleans()),
    min_size=1,
    max_size=40,
)


def simulate(
    policy: RotationPolicy, schedule: list[tuple[int, bool, bool]]
) -> list[tuple[datetime, tuple[SecretVersion, ...]]]:
    """The stored versions as seen at every instant of the schedule (the worker runs first)."""
    now = T0
    _, versions = run((), now, policy)
    seen = [(now, versions)]
    for gap, wakes, forced in schedule:
        now += timedelta(minutes=gap)
        if wakes:
            _, versions = run(versions, now, policy, force=forced)
        seen.append((now, versions))
    return seen


@given(policies(), schedules)
def test_exactly_one_version_signs_at_every_instant(
    policy: RotationPolicy, schedule: list[tuple[int, bool, bool]]
) -> None:
    for _, versions in simulate(policy, schedule):
        assert sum(v.state == ACTIVE for v in versions) == 1
        assert signing(versions) is not None


@given(policies(), schedules)
def test_states_only_move_along_the_table(
    policy: RotationPolicy, schedule: list[tuple[int, bool, bool]]
) -> None:
    history: dict[int, list[VersionState]] = {}
    for _, versions in simulate(policy, schedule):
        for v in versions:
            trail = history.setdefault(v.version, [])
            if not trail or trail[-1] != v.state:
                trail.append(v.state)
    order = [PENDING, ACTIVE, VERIFY_ONLY, RETIRED]
    for trail in history.values():
        assert trail == sorted(trail, key=order.index)
        assert trail[0] in (PENDING, ACTIVE)  # ACTIVE: created and activated in one plan


@given(policies(), schedules)
def test_what_a_version_signed_verifies_until_its_grace_ends(
    policy: RotationPolicy, schedule: list[tuple[int, bool, bool]]
) -> None:
    """A token signed at s by the version signing then verifies at every t in [s, s + grace]
    (at least: the grace counts from when the version stopped signing, which is later)."""
    seen = simulate(policy, schedule)
    for i, (s, at_s) in enumerate(seen):
        signer = signing(at_s)
        assert signer is not None
        assert verifies(signer, s)
        for t, at_t in seen[i + 1 :]:
            if t - s >= policy.grace:
                break
            (current,) = [v for v in at_t if v.version == signer.version]
            assert verifies(current, t), (s, t, current)


@given(policies(), schedules)
def test_verification_runs_from_activation_to_grace_end(
    policy: RotationPolicy, schedule: list[tuple[int, bool, bool]]
) -> None:
    for t, versions in simulate(policy, schedule):
        for v in versions:
            expected = v.activated_at is not None and (v.verify_until is None or t < v.verify_until)
            if v.state == RETIRED:
                expected = False
            assert verifies(v, t) == expected
            if v.state == VERIFY_ONLY:
                assert v.demoted_at is not None
                assert v.verify_until == v.demoted_at + policy.grace


@given(policies(), schedules)
def test_nothing_retired_ever_verifies_again(
    policy: RotationPolicy, schedule: list[tuple[int, bool, bool]]
) -> None:
    stopped: set[int] = set()
    for t, versions in simulate(policy, schedule):
        for v in versions:
            if v.version in stopped:
                assert not verifies(v, t)
                assert v.state in (VERIFY_ONLY, RETIRED)
            elif v.state == RETIRED or (v.state == VERIFY_ONLY and not verifies(v, t)):
                stopped.add(v.version)


@given(policies(), schedules)
def test_the_worker_keeps_the_schedule(
    policy: RotationPolicy, schedule: list[tuple[int, bool, bool]]
) -> None:
    """Right after the worker runs, the signing version is within its term and nothing
    the plan could do is left to do."""
    now = T0
    _, versions = run((), now, policy)
    for gap, _, forced in schedule:
        now += timedelta(minutes=gap)
        _, versions = run(versions, now, policy, force=forced)
        active = signing(versions)
        assert active is not None
        assert active.activated_at is not None
        assert now < active.activated_at + policy.rotate_every
        assert plan(versions, policy, now) == ()
        due = next_due(versions, policy)
        assert due is not None
        assert due > now
        assert sum(v.state == PENDING for v in versions) <= 1
