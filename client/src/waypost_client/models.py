"""The objects the server answers with, as frozen dataclasses (API.md's field names).

Each has `from_json`, which ignores fields it does not know (a newer server may add
some), and keeps the decoded answer in `raw` for what it does not model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ApiKey",
    "Completion",
    "Delivery",
    "DeliveryAttempt",
    "Event",
    "Group",
    "GroupStatus",
    "MemberStatus",
    "Message",
    "NewApiKey",
    "Nvrpp",
    "Receiver",
    "Subscription",
    "Tenant",
    "Token",
    "User",
]

Json = dict[str, Any]


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


@dataclass(frozen=True)
class Nvrpp:
    """Which artifact an event is about: name, version, release, platform id, package."""

    name: str
    version: str
    release: str
    platform_id: str
    package: str

    def params(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "platform_id": self.platform_id,
            "package": self.package,
        }


@dataclass(frozen=True)
class Tenant:
    id: str
    slug: str
    name: str
    disabled: bool
    created_at: datetime
    updated_at: datetime
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> Tenant:
        return cls(
            id=d["id"],
            slug=d["slug"],
            name=d["name"],
            disabled=bool(d["disabled"]),
            created_at=_time(d["created_at"]),
            updated_at=_time(d["updated_at"]),
            raw=d,
        )


@dataclass(frozen=True)
class Receiver:
    id: str
    name: str
    type: str
    version: str
    description: str
    schema: Json
    fingerprint: str
    created_at: datetime
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> Receiver:
        return cls(
            id=d["id"],
            name=d["name"],
            type=d["type"],
            version=d["version"],
            description=d.get("description", ""),
            schema=d.get("schema", {}),
            fingerprint=d.get("fingerprint", ""),
            created_at=_time(d["created_at"]),
            raw=d,
        )


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    version: str
    release: str
    platform_id: str
    package: str
    description: str
    payload: Json
    success: bool
    event_receiver_id: str
    created_at: datetime
    raw: Json = field(repr=False, compare=False)

    @property
    def key(self) -> Nvrpp:
        return Nvrpp(self.name, self.version, self.release, self.platform_id, self.package)

    @classmethod
    def from_json(cls, d: Json) -> Event:
        return cls(
            id=d["id"],
            name=d["name"],
            version=d["version"],
            release=d["release"],
            platform_id=d["platform_id"],
            package=d["package"],
            description=d.get("description", ""),
            payload=d.get("payload", {}),
            success=bool(d["success"]),
            event_receiver_id=d["event_receiver_id"],
            created_at=_time(d["created_at"]),
            raw=d,
        )


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    type: str
    version: str
    description: str
    enabled: bool
    event_receiver_ids: list[str]
    created_at: datetime
    updated_at: datetime
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> Group:
        return cls(
            id=d["id"],
            name=d["name"],
            type=d["type"],
            version=d["version"],
            description=d.get("description", ""),
            enabled=bool(d["enabled"]),
            event_receiver_ids=list(d["event_receiver_ids"]),
            created_at=_time(d["created_at"]),
            updated_at=_time(d["updated_at"]),
            raw=d,
        )


@dataclass(frozen=True)
class MemberStatus:
    event_receiver_id: str
    passing: bool
    latest_event: Event | None

    @classmethod
    def from_json(cls, d: Json) -> MemberStatus:
        latest = d.get("latest_event")
        return cls(
            event_receiver_id=d["event_receiver_id"],
            passing=bool(d["passing"]),
            latest_event=None if latest is None else Event.from_json(latest),
        )


@dataclass(frozen=True)
class GroupStatus:
    """A gate for one artifact: complete or not, and why (each member's latest event)."""

    complete: bool
    members: list[MemberStatus]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> GroupStatus:
        return cls(
            complete=bool(d["complete"]),
            members=[MemberStatus.from_json(m) for m in d.get("members", [])],
            raw=d,
        )


@dataclass(frozen=True)
class Completion:
    """One time a group fired for an artifact."""

    id: str
    group_id: str
    name: str
    version: str
    release: str
    platform_id: str
    package: str
    triggering_event_id: str
    member_event_ids: list[str]
    completed_at: datetime
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> Completion:
        return cls(
            id=d["id"],
            group_id=d["group_id"],
            name=d["name"],
            version=d["version"],
            release=d["release"],
            platform_id=d["platform_id"],
            package=d["package"],
            triggering_event_id=d["triggering_event_id"],
            member_event_ids=list(d["member_event_ids"]),
            completed_at=_time(d["completed_at"]),
            raw=d,
        )


@dataclass(frozen=True)
class Subscription:
    id: str
    name: str
    url: str
    description: str
    enabled: bool
    filter: Json
    ordering: str
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> Subscription:
        return cls(
            id=d["id"],
            name=d["name"],
            url=d["url"],
            description=d.get("description", ""),
            enabled=bool(d.get("enabled", True)),
            filter=d.get("filter") or {},
            ordering=d.get("ordering", "none"),
            created_at=_time(d["created_at"]),
            updated_at=_time(d.get("updated_at", d["created_at"])),
            disabled_reason=d.get("disabled_reason"),
            raw=d,
        )


@dataclass(frozen=True)
class DeliveryAttempt:
    number: int
    started_at: datetime
    duration_ms: float | None
    status_code: int | None
    error: str | None
    response_excerpt: str | None

    @classmethod
    def from_json(cls, d: Json) -> DeliveryAttempt:
        return cls(
            number=int(d["number"]),
            started_at=_time(d["started_at"]),
            duration_ms=d.get("duration_ms"),
            status_code=d.get("status_code"),
            error=d.get("error"),
            response_excerpt=d.get("response_excerpt"),
        )


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    message_id: str
    message_type: str
    position: int
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    attempt_log: list[DeliveryAttempt]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> Delivery:
        attempts = d.get("attempts", 0)
        log = attempts if isinstance(attempts, list) else []
        return cls(
            id=d["id"],
            subscription_id=d["subscription_id"],
            message_id=d["message_id"],
            message_type=d.get("message_type", ""),
            position=int(d.get("position", 0)),
            status=d["status"],
            attempts=len(log) if isinstance(attempts, list) else int(attempts),
            next_attempt_at=_maybe_time(d.get("next_attempt_at")),
            last_attempt_at=_maybe_time(d.get("last_attempt_at")),
            last_status_code=d.get("last_status_code"),
            last_error=d.get("last_error"),
            created_at=_time(d["created_at"]),
            attempt_log=[DeliveryAttempt.from_json(a) for a in log],
            raw=d,
        )


@dataclass(frozen=True)
class User:
    id: str
    username: str
    roles: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> User:
        return cls(
            id=d["id"],
            username=d["username"],
            roles=list(d.get("roles", [])),
            disabled=bool(d.get("disabled", False)),
            created_at=_time(d["created_at"]),
            updated_at=_time(d["updated_at"]),
            raw=d,
        )


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> ApiKey:
        return cls(
            id=d["id"],
            name=d["name"],
            prefix=d.get("prefix", ""),
            role=d["role"],
            created_at=_time(d["created_at"]),
            created_by=d.get("created_by", ""),
            expires_at=_maybe_time(d.get("expires_at")),
            revoked_at=_maybe_time(d.get("revoked_at")),
            raw=d,
        )


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: `key` is shown this once."""

    id: str
    key: str = field(repr=False)


@dataclass(frozen=True)
class Token:
    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    refresh_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, d: Json) -> Token:
        return cls(
            access_token=d["access_token"],
            token_type=d.get("token_type", "Bearer"),
            expires_in=int(d.get("expires_in", 0)),
            refresh_token=d.get("refresh_token"),
        )


@dataclass(frozen=True)
class Message:
    """One CloudEvent of the tenant's live tail, with its log position (the SSE `id`).

    `id` is the message's own id (the same on every redelivery: dedupe on it);
    `position` orders messages and is what a watcher resumes after.
    """

    position: int
    id: str
    type: str
    subject: str
    source: str
    time: datetime | None
    data: Json
    raw: Json = field(repr=False, compare=False)

    def attribute(self, name: str) -> Any:
        """An extension attribute (`success`, `eventname`, `platformid` ...), or None."""
        return self.raw.get(name)

    @property
    def success(self) -> bool | None:
        value = self.raw.get("success")
        if isinstance(value, bool) or value is None:
            return value
        return str(value).lower() == "true"

    @property
    def key(self) -> Nvrpp | None:
        """The artifact the message is about, when it is about one."""
        parts = [self.raw.get(k) for k in NVRPP_ATTRIBUTES]
        if any(p is None for p in parts):
            return None
        return Nvrpp(*(str(p) for p in parts))

    @classmethod
    def from_json(cls, position: int, d: Json) -> Message:
        time = d.get("time")
        return cls(
            position=position,
            id=str(d.get("id", "")),
            type=str(d.get("type", "")),
            subject=str(d.get("subject", "")),
            source=str(d.get("source", "")),
            time=None if time is None else _time(time),
            data=d.get("data") or {},
            raw=d,
        )


#: The CloudEvent extension attributes that hold an artifact's NVRPP (DOMAIN.md).
NVRPP_ATTRIBUTES = ("eventname", "eventversion", "release", "platformid", "package")
