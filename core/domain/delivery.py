"""Deliveries: one message on its way to one subscription, and the rules of its attempts.

A delivery moves `pending -> delivering -> succeeded | pending (retry) | dead`. The
transitions are data (`TRANSITIONS`, ARCHITECTURE.md rule 3): `advance` refuses any
other. A deliverer *claims* a due pending delivery (it holds a lease on it while it
tries), sends it once, and `plan` decides from the answer what comes next:

- a 2xx is a success;
- a 410 means the target is gone: the subscription is disabled and the delivery
  waits, pending, until it is enabled again (`HOLD`);
- 429 and 503 are retried, no sooner than their `Retry-After` says (clamped to the
  longest delay of the schedule: it only ever delays more, never less);
- everything else (other statuses, 3xx included: redirects are never followed), no
  answer at all (timeouts, refused connections, an address the guard refused) is
  retried after the next delay of the schedule, with bounded jitter;
- after the schedule's last delay the delivery is *dead*: kept, visible, and
  redriven on request (`REDRIVE`); `REPLAY` sends a finished one again.

A subscription whose deliveries fail without a success for `disable_after` (default
five days) is disabled by the failure that finds it so (`should_disable`).

Attempts are counted twice: `attempts` in all (they number the attempt records) and
`round_attempts` since the delivery last (re)started (creation, redrive, replay): the
schedule counts the latter, so a redriven delivery gets a whole schedule again.

Pure: the time and the randomness of the jitter are arguments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import msgspec

from core.domain.errors import Conflict

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "TRANSITIONS",
    "Attempt",
    "Delivery",
    "DeliveryEvent",
    "DeliveryStatus",
    "Plan",
    "RetryPolicy",
    "Verdict",
    "advance",
    "classify",
    "parse_retry_after",
    "plan",
    "retry_delay",
    "should_disable",
]


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class DeliveryEvent(StrEnum):
    #: A deliverer leases a due delivery to attempt it.
    CLAIM = "claim"
    #: The target answered 2xx.
    SUCCEED = "succeed"
    #: The attempt failed and the schedule has a delay left.
    RETRY = "retry"
    #: The attempt failed and the schedule is used up.
    GIVE_UP = "give_up"
    #: The subscription was disabled (410, or failing too long): wait until it is enabled.
    HOLD = "hold"
    #: Handed back without an attempt (the deliverer stops, or its subscription is
    #: disabled or its breaker open since the claim).
    RELEASE = "release"
    #: The lease lapsed (its deliverer died or hung): due again at once.
    EXPIRE = "expire"
    #: An operator sends a dead delivery again.
    REDRIVE = "redrive"
    #: A replay from a log position sends a finished delivery again.
    REPLAY = "replay"


_S, _E = DeliveryStatus, DeliveryEvent

#: (status before, event) -> status after.
TRANSITIONS: Mapping[tuple[DeliveryStatus, DeliveryEvent], DeliveryStatus] = MappingProxyType(
    {
        (_S.PENDING, _E.CLAIM): _S.DELIVERING,
        (_S.DELIVERING, _E.SUCCEED): _S.SUCCEEDED,
        (_S.DELIVERING, _E.RETRY): _S.PENDING,
        (_S.DELIVERING, _E.GIVE_UP): _S.DEAD,
        (_S.DELIVERING, _E.HOLD): _S.PENDING,
        (_S.DELIVERING, _E.RELEASE): _S.PENDING,
        (_S.DELIVERING, _E.EXPIRE): _S.PENDING,
        (_S.DEAD, _E.REDRIVE): _S.PENDING,
        (_S.DEAD, _E.REPLAY): _S.PENDING,
        (_S.SUCCEEDED, _E.REPLAY): _S.PENDING,
    }
)


def advance(status: DeliveryStatus, event: DeliveryEvent) -> DeliveryStatus:
    """The status after `event`; a Conflict when the table has no such transition."""
    after = TRANSITIONS.get((status, event))
    if after is None:
        raise Conflict(f"A {status} delivery cannot {event}.")
    return after


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One message for one subscription, and where its attempts stand."""

    id: str
    tenant_id: str
    subscription_id: str
    #: The message's id: the `webhook-id` of every attempt.
    message_id: str
    message_type: str
    #: The message's position in its tenant's log.
    position: int
    #: Ordering `artifact`: which artifact the message is about (None: no order to keep).
    ordering_key: str | None = None
    status: DeliveryStatus
    attempts: int = 0
    round_attempts: int = 0
    #: When it is due (pending); None once finished (succeeded, dead).
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    #: When the message was committed to the log (its CloudEvent `time`).
    message_time: datetime
    created_at: datetime
    #: The claim that holds it while `delivering`, and until when.
    claimed_by: str | None = None
    lease_until: datetime | None = None
    #: The message's log entry's correlation and causation ids: the trace and span of the
    #: request that wrote it, when traced (an attempt continues that trace).
    correlation_id: str | None = None
    causation_id: str | None = None


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a delivery, as recorded."""

    delivery_id: str
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    response_excerpt: str = ""


# --- answers ---------------------------------------------------------------------------------


class Verdict(StrEnum):
    SUCCESS = "success"
    #: 410 Gone: the target says it wants no more.
    GONE = "gone"
    #: 429 or 503: the target asks for patience (Retry-After).
    THROTTLED = "throttled"
    #: Anything else, or no answer.
    FAILED = "failed"


HTTP_GONE: Final = 410
THROTTLING: Final = frozenset({429, 503})


def classify(status_code: int | None) -> Verdict:
    """What an answer means for a delivery (None: no HTTP answer at all)."""
    if status_code is None:
        return Verdict.FAILED
    if 200 <= status_code < 300:
        return Verdict.SUCCESS
    if status_code == HTTP_GONE:
        return Verdict.GONE
    if status_code in THROTTLING:
        return Verdict.THROTTLED
    return Verdict.FAILED


_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT"
)
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")  # fmt: skip


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a `Retry-After` value asks to wait, never negative: delay-seconds, or an
    HTTP-date in the IMF-fixdate form RFC 9110 has senders use; None when it is missing
    or unreadable (the schedule's delay then stands)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text[:12]))  # more digits than that is "forever": clamped anyway
    found = _IMF_FIXDATE.fullmatch(text)
    if found is None:
        return None
    day, month, year, hour, minute, second = found.groups()
    try:
        moment = datetime(
            int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second),
            tzinfo=UTC,
        )  # fmt: skip
    except ValueError:  # 31 Feb, 25:00 ...
        return None
    return max(0.0, (moment - now).total_seconds())


# --- the retry schedule ----------------------------------------------------------------------

#: About 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h, 24 h: eleven attempts over
#: about two days.
DEFAULT_RETRY_SCHEDULE: Final = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0,
                                 43200.0, 86400.0)  # fmt: skip
DEFAULT_JITTER: Final = 0.1
MAX_SCHEDULE_LENGTH: Final = 50


@dataclass(frozen=True)
class RetryPolicy:
    """Delays (seconds) before the 2nd, 3rd ... attempt; each varied by +-`jitter` (a
    fraction). `disable_after`: how long a subscription may fail before it is disabled."""

    schedule: Sequence[float] = DEFAULT_RETRY_SCHEDULE
    jitter: float = DEFAULT_JITTER
    disable_after: timedelta = timedelta(hours=120)

    def __post_init__(self) -> None:
        if not 1 <= len(self.schedule) <= MAX_SCHEDULE_LENGTH:
            raise ValueError(f"a retry schedule has 1 to {MAX_SCHEDULE_LENGTH} delays")
        if not all(math.isfinite(d) and d > 0 for d in self.schedule):
            raise ValueError("every delay of a retry schedule must be a positive number")
        if not 0 <= self.jitter < 1:
            raise ValueError("the jitter must be a fraction in [0, 1)")
        if self.disable_after <= timedelta(0):
            raise ValueError("disable_after must be positive")

    @property
    def attempts(self) -> int:
        """Attempts a delivery gets in one round: the first and one per delay."""
        return 1 + len(self.schedule)

    @property
    def longest(self) -> float:
        """The longest delay: how far a `Retry-After` may push an attempt."""
        return max(self.schedule)


def retry_delay(policy: RetryPolicy, round_attempts: int, random: float) -> float | None:
    """Seconds until the next attempt after `round_attempts` attempts of this round, or None
    when the schedule is used up. `random` in [0, 1) picks the jitter: the delay stays
    within +-`policy.jitter` of the schedule's."""
    if round_attempts < 1:
        raise ValueError("a retry follows at least one attempt")
    if round_attempts > len(policy.schedule):
        return None
    if not 0 <= random < 1:
        raise ValueError("random must be in [0, 1)")
    base = policy.schedule[round_attempts - 1]
    return base * (1 + policy.jitter * (2 * random - 1))


def should_disable(failing_since: datetime | None, now: datetime, policy: RetryPolicy) -> bool:
    """The auto-disable rule: failing without a success for `disable_after` or longer."""
    return failing_since is not None and now - failing_since >= policy.disable_after


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt's answer leads to."""

    event: DeliveryEvent
    status: DeliveryStatus
    #: When it is due again (pending), or None (finished).
    next_attempt_at: datetime | None
    #: The subscription is to be disabled, for this reason.
    disable: str | None = None
    #: The subscription now fails (it may have been failing already), or succeeds again.
    failing: bool


GONE_REASON: Final = "the target answered 410 Gone"


def plan(
    *,
    verdict: Verdict,
    round_attempts: int,
    retry_after: str | None,
    failing_since: datetime | None,
    now: datetime,
    policy: RetryPolicy,
    random: float,
) -> Plan:
    """Decide what follows an attempt. `round_attempts` counts it; `failing_since` is the
    subscription's (None: its last attempt succeeded); `random` in [0, 1) sets the jitter."""

    def then(event: DeliveryEvent, at: datetime | None, disable: str | None = None) -> Plan:
        return Plan(
            event=event,
            status=advance(DeliveryStatus.DELIVERING, event),
            next_attempt_at=at,
            disable=disable,
            failing=verdict != Verdict.SUCCESS,
        )

    if verdict == Verdict.SUCCESS:
        return then(DeliveryEvent.SUCCEED, None)
    if verdict == Verdict.GONE:
        return then(DeliveryEvent.HOLD, now, GONE_REASON)
    if should_disable(failing_since, now, policy):
        assert failing_since is not None
        hours = (now - failing_since).total_seconds() / 3600
        reason = f"its deliveries failed for {hours:.0f} hours without a success"
        return then(DeliveryEvent.HOLD, now, reason)
    delay = retry_delay(policy, round_attempts, random)
    if delay is None:
        return then(DeliveryEvent.GIVE_UP, None)
    if verdict == Verdict.THROTTLED:
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            delay = max(delay, min(asked, policy.longest))
    return then(DeliveryEvent.RETRY, now + timedelta(seconds=delay))
