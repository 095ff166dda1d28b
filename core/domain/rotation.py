"""Secret rotation: versions of a secret move pending -> active -> verify_only -> retired.

One secret (a JWT signing key, a webhook signing secret ...) has numbered
versions. Exactly one version is *active*: it signs. A new version may be
*pending* for a while before it signs (published early, so that verifiers that
cache public keys see it in time). When it becomes active, the previous one
turns *verify_only*: it signs nothing more but still verifies until its grace
ends, so that whatever it signed before the rotation stays good. Then it is
*retired* and never verifies again.

The transitions are data (`TRANSITIONS`, ARCHITECTURE.md rule 3); `plan` decides,
from the versions, a `RotationPolicy` and the time, which steps bring a secret
up to date, and `apply` performs them. Whether a version verifies is a function
of the time as well as its state (`verifies`): a worker that runs late never
stretches a grace period.

This module keeps no key material: the adapter makes a version's secret when a
`CREATE` step asks for it and stores it encrypted beside these records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

import msgspec

from core.domain.errors import Conflict

__all__ = [
    "TRANSITIONS",
    "RotationEvent",
    "RotationPolicy",
    "SecretVersion",
    "Step",
    "VersionState",
    "apply",
    "next_due",
    "plan",
    "published",
    "signing",
    "verifies",
    "verifying",
]


class VersionState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    VERIFY_ONLY = "verify_only"
    RETIRED = "retired"


class RotationEvent(StrEnum):
    CREATE = "create"
    ACTIVATE = "activate"
    DEMOTE = "demote"
    RETIRE = "retire"


#: (state before, or None for a version that does not exist yet; event) -> state after.
#: A pending version that is superseded before it ever signs is retired directly.
TRANSITIONS: Mapping[tuple[VersionState | None, RotationEvent], VersionState] = MappingProxyType(
    {
        (None, RotationEvent.CREATE): VersionState.PENDING,
        (VersionState.PENDING, RotationEvent.ACTIVATE): VersionState.ACTIVE,
        (VersionState.PENDING, RotationEvent.RETIRE): VersionState.RETIRED,
        (VersionState.ACTIVE, RotationEvent.DEMOTE): VersionState.VERIFY_ONLY,
        (VersionState.VERIFY_ONLY, RotationEvent.RETIRE): VersionState.RETIRED,
    }
)


class RotationPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Rotate every `rotate_every`; old versions verify for `grace` after they stop signing.

    A new version is created (pending, published, not signing) `prepublish`
    before it becomes active. For signing keys, `grace` must be at least the
    longest lifetime of what the key signs plus the clock leeway.
    """

    rotate_every: timedelta
    grace: timedelta
    prepublish: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.rotate_every <= timedelta(0):
            raise ValueError("rotate_every must be positive")
        if self.grace < timedelta(0):
            raise ValueError("grace must not be negative")
        if not timedelta(0) <= self.prepublish < self.rotate_every:
            raise ValueError("prepublish must be at least 0 and less than rotate_every")


class SecretVersion(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    state: VersionState
    created_at: datetime
    activated_at: datetime | None = None
    demoted_at: datetime | None = None
    #: Set when demoted: the end of its grace, fixed then (a later policy change
    #: does not move it).
    verify_until: datetime | None = None
    retired_at: datetime | None = None


class Step(msgspec.Struct, frozen=True):
    event: RotationEvent
    version: int


def signing(versions: Iterable[SecretVersion]) -> SecretVersion | None:
    """The version that signs: the active one (None before the first rotation)."""
    active = [v for v in versions if v.state == VersionState.ACTIVE]
    if len(active) > 1:
        raise Conflict("More than one version of the secret is active.")
    return active[0] if active else None


def verifies(version: SecretVersion, now: datetime) -> bool:
    """Active, or verify-only with its grace not over at `now`. Pending and retired never do."""
    if version.state == VersionState.ACTIVE:
        return True
    if version.state == VersionState.VERIFY_ONLY:
        return version.verify_until is not None and now < version.verify_until
    return False


def verifying(versions: Iterable[SecretVersion], now: datetime) -> tuple[SecretVersion, ...]:
    """The versions that verify at `now`, newest first."""
    return tuple(sorted((v for v in versions if verifies(v, now)), key=lambda v: -v.version))


def published(versions: Iterable[SecretVersion], now: datetime) -> tuple[SecretVersion, ...]:
    """What a public key set shows at `now`: the pending version(s) and the verifying ones."""
    return tuple(
        sorted(
            (v for v in versions if v.state == VersionState.PENDING or verifies(v, now)),
            key=lambda v: -v.version,
        )
    )


def _advance(
    version: SecretVersion | None, step: Step, *, now: datetime, grace: timedelta
) -> SecretVersion:
    before = None if version is None else version.state
    after = TRANSITIONS.get((before, step.event))
    if after is None:
        raise Conflict(f"Version {step.version} cannot {step.event} from {before or 'nothing'}.")
    match step.event:
        case RotationEvent.CREATE:
            return SecretVersion(version=step.version, state=after, created_at=now)
        case RotationEvent.ACTIVATE:
            assert version is not None
            return msgspec.structs.replace(version, state=after, activated_at=now)
        case RotationEvent.DEMOTE:
            assert version is not None
            return msgspec.structs.replace(
                version, state=after, demoted_at=now, verify_until=now + grace
            )
        case RotationEvent.RETIRE:
            assert version is not None
            return msgspec.structs.replace(version, state=after, retired_at=now)
    raise AssertionError(step.event)  # pragma: no cover


def apply(
    versions: Iterable[SecretVersion],
    steps: Iterable[Step],
    *,
    policy: RotationPolicy,
    now: datetime,
) -> tuple[SecretVersion, ...]:
    """The versions after `steps`, in version order. A step not in `TRANSITIONS` is a Conflict."""
    by_number = {v.version: v for v in versions}
    for step in steps:
        by_number[step.version] = _advance(
            by_number.get(step.version), step, now=now, grace=policy.grace
        )
    return tuple(by_number[n] for n in sorted(by_number))


def plan(
    versions: Sequence[SecretVersion],
    policy: RotationPolicy,
    now: datetime,
    *,
    force: bool = False,
) -> tuple[Step, ...]:
    """The steps that bring the secret up to date at `now` (none when it is).

    - no active version: the newest pending one becomes active, or a new one is
      created and activated at once (the first start);
    - `prepublish` before the active version's term ends, a pending one is created;
    - when the term ends (or at once with `force`, an operator's rotation): the
      newest pending version becomes active and the active one verify-only;
      older pending versions, which never signed, are retired;
    - every verify-only version whose grace is over is retired.

    The steps run in one transaction: `apply(versions, plan(...))` always
    leaves exactly one active version.
    """
    steps: list[Step] = []
    state = {v.version: v for v in versions}

    def take(event: RotationEvent, number: int) -> None:
        step = Step(event, number)
        state[number] = _advance(state.get(number), step, now=now, grace=policy.grace)
        steps.append(step)

    def newest_pending() -> list[int]:
        return sorted(n for n, v in state.items() if v.state == VersionState.PENDING)

    def create() -> None:
        take(RotationEvent.CREATE, max(state, default=0) + 1)

    active = signing(state.values())
    if active is None or active.activated_at is None:
        if active is not None:
            raise Conflict(f"Version {active.version} is active with no activation time.")
        if not newest_pending():
            create()
        *older, newest = newest_pending()
        take(RotationEvent.ACTIVATE, newest)
        for number in older:
            take(RotationEvent.RETIRE, number)
    else:
        due = active.activated_at + policy.rotate_every
        if (force or now >= due - policy.prepublish) and not newest_pending():
            create()
        if force or now >= due:
            *older, newest = newest_pending()
            take(RotationEvent.ACTIVATE, newest)
            take(RotationEvent.DEMOTE, active.version)
            for number in older:
                take(RotationEvent.RETIRE, number)
    for number, version in sorted(state.items()):
        if version.state == VersionState.VERIFY_ONLY and not verifies(version, now):
            take(RotationEvent.RETIRE, number)
    return tuple(steps)


def next_due(versions: Iterable[SecretVersion], policy: RotationPolicy) -> datetime | None:
    """When `plan` will next have something to do (None: nothing is active yet, plan now)."""
    listed = list(versions)
    active = signing(listed)
    if active is None or active.activated_at is None:
        return None
    due = active.activated_at + policy.rotate_every
    if not any(v.state == VersionState.PENDING for v in listed):
        due -= policy.prepublish
    ends = [
        v.verify_until
        for v in listed
        if v.state == VersionState.VERIFY_ONLY and v.verify_until is not None
    ]
    return min([due, *ends])
