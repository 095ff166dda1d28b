"""CloudEvents messages, checked by an independent parser (the CloudEvents SDK)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from hypothesis import given
from hypothesis import strategies as st

from core.domain import messages, model
from core.domain.messages import CloudEvent, build_message, decode_message, encode_message

TENANT_ID = "01HX0000000000000000000001"
OTHER_TENANT_ID = "01HX0000000000000000000002"
RECEIVER_ID = "01HX00000000000000000000R1"
RECEIVER2_ID = "01HX00000000000000000000R2"
GROUP_ID = "01HX00000000000000000000G1"
MESSAGE_ID = "01HX0000000000000000000M01"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)

CORE_ATTRIBUTES = {
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
}
NVRPP_EXTENSIONS = ("eventname", "eventversion", "release", "platformid", "package")

TENANT = model.Tenant(id=TENANT_ID, slug="acme", name="Acme", created_at=T0, updated_at=T0)


def receiver(rid: str = RECEIVER_ID, type_: str = "org.acme.build", **kw: Any) -> model.Receiver:
    values: dict[str, Any] = {
        "id": rid,
        "tenant_id": TENANT_ID,
        "name": "build",
        "type": type_,
        "version": "1",
        "description": "",
        "schema": {"type": "object"},
        "fingerprint": "0" * 64,
        "created_at": T0,
    }
    values.update(kw)
    return model.Receiver(**values)


def event(eid: str, rid: str = RECEIVER_ID, **kw: Any) -> model.Event:
    values: dict[str, Any] = {
        "id": eid,
        "tenant_id": TENANT_ID,
        "name": "waypost",
        "version": "1.2.3",
        "release": "1.el9",
        "platform_id": "x86_64-linux",
        "package": "waypost-cli",
        "description": "",
        "payload": {"ok": True},
        "success": True,
        "event_receiver_id": rid,
        "created_at": T0,
    }
    values.update(kw)
    return model.Event(**values)


def group(**kw: Any) -> model.Group:
    values: dict[str, Any] = {
        "id": GROUP_ID,
        "tenant_id": TENANT_ID,
        "name": "release-gate",
        "type": "gate",
        "version": "1",
        "description": "",
        "enabled": True,
        "event_receiver_ids": (RECEIVER_ID, RECEIVER2_ID),
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(kw)
    return model.Group(**values)


E1 = event("01HX00000000000000000000E1", RECEIVER_ID)
E2 = event("01HX00000000000000000000E2", RECEIVER2_ID)


def completion(members: Sequence[str] = (E1.id, E2.id), trigger: str = E2.id) -> model.Completion:
    return model.Completion(
        id="01HX00000000000000000000C1",
        tenant_id=TENANT_ID,
        group_id=GROUP_ID,
        name=E1.name,
        version=E1.version,
        release=E1.release,
        platform_id=E1.platform_id,
        package=E1.package,
        triggering_event_id=trigger,
        member_event_ids=tuple(members),
        completed_at=T0,
    )


def as_json(value: object) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def build(domain_event: model.DomainEvent, **kw: Any) -> CloudEvent:
    kw.setdefault("tenant", TENANT)
    kw.setdefault("message_id", MESSAGE_ID)
    kw.setdefault("time", T0)
    msg = build_message(domain_event, **kw)
    assert msg is not None
    return msg


def parse(msg: CloudEvent) -> tuple[BaseCloudEvent, dict[str, Any]]:
    """The message as the CloudEvents SDK reads it, and as plain JSON; checks the invariants."""
    body = encode_message(msg)
    parsed = from_structured(
        HTTPMessage(headers={"content-type": JSONFormat.CONTENT_TYPE}, body=body), JSONFormat()
    )
    raw = msgspec.json.decode(body)
    assert isinstance(raw, dict)
    # Common to every message.
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == msg.id
    assert parsed.get_source() == "/waypost/tenants/acme"
    assert parsed.get_type() == msg.type
    assert parsed.get_subject() == msg.subject
    assert parsed.get_time() == msg.time
    assert parsed.get_datacontenttype() == "application/json"
    assert raw["time"].endswith("Z")  # RFC 3339, in UTC
    for name in set(raw) - CORE_ATTRIBUTES:
        assert re.fullmatch(r"[a-z0-9]+", name), name
    assert parsed.get_extension("tenant") == "acme"
    data = parsed.get_data()
    assert isinstance(data, dict)
    assert set(data) == {"events", "event_receivers", "event_receiver_groups"}
    for key in ("events", "event_receivers", "event_receiver_groups"):
        assert isinstance(data[key], list), key
    # And back into our own struct, unchanged.
    assert decode_message(body) == msg
    return parsed, raw


# --- event recorded ------------------------------------------------------------------------


def test_event_recorded_message() -> None:
    rec = receiver()
    e = event("01HX00000000000000000000E1", success=False)
    msg = build(model.EventRecorded(event=e), receiver=rec)
    parsed, raw = parse(msg)
    assert parsed.get_type() == "org.acme.build"
    assert parsed.get_subject() == RECEIVER_ID
    assert parsed.get_extension("success") is False
    assert parsed.get_extension("eventname") == "waypost"
    assert parsed.get_extension("eventversion") == "1.2.3"
    assert parsed.get_extension("release") == "1.el9"
    assert parsed.get_extension("platformid") == "x86_64-linux"
    assert parsed.get_extension("package") == "waypost-cli"
    assert raw["data"]["events"] == [as_json(e)]
    assert raw["data"]["event_receivers"] == [as_json(rec)]
    assert raw["data"]["event_receiver_groups"] == []
    assert list(raw) == [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "success",
        "eventname",
        "eventversion",
        "release",
        "platformid",
        "package",
        "tenant",
        "data",
    ]


def test_event_recorded_needs_its_receiver() -> None:
    recorded = model.EventRecorded(event=E1)
    with pytest.raises(ValueError, match="receiver"):
        build_message(recorded, tenant=TENANT, message_id=MESSAGE_ID, time=T0)
    with pytest.raises(ValueError, match="receiver"):
        build(recorded, receiver=receiver(RECEIVER2_ID))


def test_entities_of_another_tenant_are_refused() -> None:
    with pytest.raises(ValueError, match="another tenant"):
        build(
            model.EventRecorded(event=event(E1.id, tenant_id=OTHER_TENANT_ID)), receiver=receiver()
        )
    with pytest.raises(ValueError, match="another tenant"):
        build(model.EventRecorded(event=E1), receiver=receiver(tenant_id=OTHER_TENANT_ID))
    with pytest.raises(ValueError, match="another tenant"):
        build(model.ReceiverCreated(receiver=receiver(tenant_id=OTHER_TENANT_ID)))
    with pytest.raises(ValueError, match="another tenant"):
        build(model.GroupCreated(group=group(tenant_id=OTHER_TENANT_ID)))


# --- receivers and groups ------------------------------------------------------------------


def test_receiver_created_message() -> None:
    rec = receiver()
    parsed, raw = parse(build(model.ReceiverCreated(receiver=rec)))
    assert parsed.get_type() == "waypost.receiver.created"
    assert parsed.get_subject() == RECEIVER_ID
    assert raw["data"] == {
        "events": [],
        "event_receivers": [as_json(rec)],
        "event_receiver_groups": [],
    }
    # Not about an artifact: no success, no NVRPP (left out, not null).
    for name in ("success", *NVRPP_EXTENSIONS):
        assert name not in raw
    assert set(raw) - CORE_ATTRIBUTES == {"tenant"}


@pytest.mark.parametrize(
    ("cls", "type_"),
    [
        (model.GroupCreated, "waypost.group.created"),
        (model.GroupModified, "waypost.group.modified"),
        (model.GroupDeleted, "waypost.group.deleted"),
    ],
)
def test_group_change_messages(
    cls: type[model.GroupCreated | model.GroupModified | model.GroupDeleted], type_: str
) -> None:
    g = group(enabled=False)
    parsed, raw = parse(build(cls(group=g)))
    assert parsed.get_type() == type_
    assert parsed.get_subject() == GROUP_ID
    assert raw["data"] == {
        "events": [],
        "event_receivers": [],
        "event_receiver_groups": [as_json(g)],
    }
    assert set(raw) - CORE_ATTRIBUTES == {"tenant"}


# --- group completed -----------------------------------------------------------------------


def test_group_completed_message() -> None:
    g = group()
    c = completion()
    parsed, raw = parse(build(model.GroupCompleted(completion=c, group=g), group_events=[E1, E2]))
    assert parsed.get_type() == "waypost.group.completed"
    assert parsed.get_subject() == GROUP_ID
    assert parsed.get_extension("success") is True
    assert parsed.get_extension("eventname") == c.name
    assert parsed.get_extension("eventversion") == c.version
    assert parsed.get_extension("release") == c.release
    assert parsed.get_extension("platformid") == c.platform_id
    assert parsed.get_extension("package") == c.package
    # The triggering event first, then the other members' latest events.
    assert [e["id"] for e in raw["data"]["events"]] == [E2.id, E1.id]
    assert raw["data"]["event_receivers"] == []
    assert raw["data"]["event_receiver_groups"] == [as_json(g)]


def test_group_completed_with_the_trigger_not_listed_among_members() -> None:
    c = completion(members=(E1.id,), trigger=E2.id)
    msg = build(model.GroupCompleted(completion=c, group=group()), group_events=[E2, E1])
    assert [e.id for e in msg.data.events] == [E2.id, E1.id]


E3 = event("01HX00000000000000000000E3")
OTHER_RELEASE = event(E2.id, RECEIVER2_ID, release="2")
FAILED = event(E2.id, RECEIVER2_ID, success=False)
FOREIGN = event(E2.id, RECEIVER2_ID, tenant_id=OTHER_TENANT_ID)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"group": group(id="01HX00000000000000000000G2"), "group_events": [E1, E2]}, "group"),
        ({"group": group()}, "missing"),
        ({"group": group(), "group_events": [E1]}, "missing"),
        ({"group": group(), "group_events": [E1, E2, E3]}, "not listed"),
        ({"group": group(), "group_events": [E1, E2, E2]}, "twice"),
        ({"group": group(), "group_events": [E1, OTHER_RELEASE]}, "another artifact"),
        ({"group": group(), "group_events": [E1, FAILED]}, "not a success"),
        ({"group": group(), "group_events": [E1, FOREIGN]}, "another tenant"),
        ({"group": group(tenant_id=OTHER_TENANT_ID), "group_events": [E1, E2]}, "another tenant"),
    ],
)
def test_group_completed_checks_its_evidence(kw: dict[str, Any], match: str) -> None:
    completed = model.GroupCompleted(completion=completion(), group=kw["group"])
    with pytest.raises(ValueError, match=match):
        build(completed, group_events=kw.get("group_events", ()))


def test_group_completed_refuses_a_completion_listing_a_member_twice() -> None:
    c = completion(members=(E1.id, E1.id, E2.id))
    with pytest.raises(ValueError, match="twice"):
        build(model.GroupCompleted(completion=c, group=group()), group_events=[E1, E2])


# --- not published, and argument checks ----------------------------------------------------


@pytest.mark.parametrize("cls", [model.TenantCreated, model.TenantModified])
def test_tenant_changes_are_not_published(
    cls: type[model.TenantCreated | model.TenantModified],
) -> None:
    assert build_message(cls(tenant=TENANT), tenant=TENANT, message_id=MESSAGE_ID, time=T0) is None


def test_an_unknown_domain_event_raises() -> None:
    class Other(model.DomainEvent, frozen=True, kw_only=True, tag="test.other"):
        pass

    with pytest.raises(TypeError):
        build_message(Other(), tenant=TENANT, message_id=MESSAGE_ID, time=T0)


def test_time_must_be_aware_and_is_sent_in_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build(model.ReceiverCreated(receiver=receiver()), time=datetime(2024, 5, 1, 12))
    paris = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    msg = build(model.ReceiverCreated(receiver=receiver()), time=paris)
    assert msg.time == T0
    assert msg.time.tzinfo is UTC
    _, raw = parse(msg)
    assert raw["time"] == "2024-05-01T12:00:00.123456Z"


@pytest.mark.parametrize("bad", ["", "not-a-ulid", "01hx0000000000000000000m01", "8" + "0" * 25])
def test_message_id_must_be_a_ulid(bad: str) -> None:
    with pytest.raises(ValueError, match="ULID"):
        build(model.ReceiverCreated(receiver=receiver()), message_id=bad)


def test_source_for() -> None:
    assert messages.source_for(TENANT) == "/waypost/tenants/acme"


# --- any NVRPP text ------------------------------------------------------------------------

_nvrpp_text = st.text(min_size=1, max_size=30)


_nvrpp = st.fixed_dictionaries(
    {
        "name": _nvrpp_text,
        "version": _nvrpp_text,
        "release": _nvrpp_text,
        "platform_id": _nvrpp_text,
        "package": _nvrpp_text,
    }
)


@given(
    nvrpp=_nvrpp,
    success=st.booleans(),
    receiver_type=st.text(min_size=1, max_size=30),
    payload=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_event_recorded_messages_parse_for_any_nvrpp(
    nvrpp: dict[str, str], success: bool, receiver_type: str, payload: dict[str, Any]
) -> None:
    e = event(E1.id, success=success, payload=payload, **nvrpp)
    rec = receiver(type_=receiver_type)
    parsed, raw = parse(build(model.EventRecorded(event=e), receiver=rec))
    assert parsed.get_type() == receiver_type
    assert parsed.get_extension("success") is success
    assert parsed.get_extension("eventname") == nvrpp["name"]
    assert parsed.get_extension("eventversion") == nvrpp["version"]
    assert parsed.get_extension("release") == nvrpp["release"]
    assert parsed.get_extension("platformid") == nvrpp["platform_id"]
    assert parsed.get_extension("package") == nvrpp["package"]
    assert raw["data"]["events"][0]["payload"] == payload
