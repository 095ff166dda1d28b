"""The event registry: versions, upcaster chains, encode/decode round trips."""

from __future__ import annotations

import copy
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import ids, model
from core.domain.envelope import REGISTRY, Envelope, EventRegistry, UnknownEventType

# --- a synthetic, test-only event type with three schema versions ---------------------------
# v1: {"full_name": "Ada Lovelace", "login": "ada"}
# v2: "login" renamed to "username"
# v3: "full_name" split into "given_name" and "family_name" (at the first space)


class ProfileChanged(model.DomainEvent, frozen=True, kw_only=True, tag="test.profile.changed"):
    given_name: str
    family_name: str
    username: str


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k != "login"}
    out["username"] = data["login"]
    return out


def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    given, _, family = data["full_name"].partition(" ")
    out = {k: v for k, v in data.items() if k != "full_name"}
    out["given_name"] = given
    out["family_name"] = family
    return out


def profile_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(ProfileChanged, 3, {1: v1_to_v2, 2: v2_to_v3})
    return registry


def test_current_version() -> None:
    assert profile_registry().current_version("test.profile.changed") == 3


def test_decode_v1_runs_the_whole_chain() -> None:
    event = profile_registry().decode(
        "test.profile.changed", 1, {"full_name": "Ada King Lovelace", "login": "ada"}
    )
    assert event == ProfileChanged(given_name="Ada", family_name="King Lovelace", username="ada")


def test_decode_v2_runs_the_rest_of_the_chain() -> None:
    event = profile_registry().decode(
        "test.profile.changed", 2, {"full_name": "Grace Hopper", "username": "grace"}
    )
    assert event == ProfileChanged(given_name="Grace", family_name="Hopper", username="grace")


def test_decode_current_version_runs_no_upcaster() -> None:
    def explode(data: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("an upcaster ran on current data")

    registry = EventRegistry()
    registry.register(ProfileChanged, 2, {1: explode})
    data = {"given_name": "A", "family_name": "B", "username": "c"}
    assert registry.decode("test.profile.changed", 2, data) == ProfileChanged(
        given_name="A", family_name="B", username="c"
    )


def test_encode_always_writes_the_current_version() -> None:
    registry = profile_registry()
    event = ProfileChanged(given_name="Ada", family_name="Lovelace", username="ada")
    assert registry.encode(event) == (
        "test.profile.changed",
        3,
        {"given_name": "Ada", "family_name": "Lovelace", "username": "ada"},
    )


@given(full_name=st.text(), login=st.text())
def test_decoding_v1_equals_upcasting_by_hand(full_name: str, login: str) -> None:
    registry = profile_registry()
    v1 = {"full_name": full_name, "login": login}
    kept = copy.deepcopy(v1)
    by_hand = msgspec.convert(v2_to_v3(v1_to_v2(v1)), ProfileChanged)
    assert registry.decode("test.profile.changed", 1, v1) == by_hand
    assert v1 == kept  # the stored data is never modified
    # Written again, it is current data that decodes to the same event.
    name, version, data = registry.encode(by_hand)
    assert (name, version) == ("test.profile.changed", 3)
    assert registry.decode(name, version, data) == by_hand


def test_decode_does_not_modify_data_even_with_mutating_upcasters() -> None:
    def rename_in_place(data: dict[str, Any]) -> dict[str, Any]:
        data["username"] = data.pop("login")
        data["nested"]["touched"] = True
        return data

    class Nested(model.DomainEvent, frozen=True, kw_only=True, tag="test.nested"):
        username: str
        nested: dict[str, Any]

    registry = EventRegistry()
    registry.register(Nested, 2, {1: rename_in_place})
    stored: dict[str, Any] = {"login": "ada", "nested": {}}
    event = registry.decode("test.nested", 1, stored)
    assert event == Nested(username="ada", nested={"touched": True})
    assert stored == {"login": "ada", "nested": {}}


def test_a_type_can_move_to_a_new_version_later() -> None:
    registry = EventRegistry()
    registry.register(ProfileChanged, 2, {1: v1_to_v2})
    registry.register(ProfileChanged, 3, {2: v2_to_v3})
    assert registry.current_version("test.profile.changed") == 3
    assert registry.decode(
        "test.profile.changed", 1, {"full_name": "Ada Lovelace", "login": "ada"}
    ) == ProfileChanged(given_name="Ada", family_name="Lovelace", username="ada")


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "version"),
    [
        ("test.unknown", 1),
        ("", 1),
        ("test.profile.changed", 0),
        ("test.profile.changed", -1),
        ("test.profile.changed", 4),  # newer than this build knows
        ("test.profile.changed", 99),
    ],
)
def test_unknown_type_or_version_raises(type_name: str, version: int) -> None:
    with pytest.raises(UnknownEventType) as exc:
        profile_registry().decode(type_name, version, {})
    assert exc.value.type_name == type_name
    assert type_name in str(exc.value)


def test_unknown_event_type_is_not_a_domain_error() -> None:
    from core.domain.errors import DomainError

    assert not issubclass(UnknownEventType, DomainError)


def test_newer_version_says_so() -> None:
    with pytest.raises(UnknownEventType, match="newer than this build knows"):
        REGISTRY.decode("tenant.created", 2, {})


def test_current_version_of_an_unknown_type_raises() -> None:
    with pytest.raises(UnknownEventType):
        REGISTRY.current_version("test.nope")


def test_encoding_an_unregistered_type_raises() -> None:
    with pytest.raises(UnknownEventType):
        EventRegistry().encode(ProfileChanged(given_name="a", family_name="b", username="c"))


def test_encoding_a_lookalike_class_raises() -> None:
    class Lookalike(model.DomainEvent, frozen=True, kw_only=True, tag="test.profile.changed"):
        given_name: str
        family_name: str
        username: str

    with pytest.raises(UnknownEventType, match="not the registered class"):
        profile_registry().encode(Lookalike(given_name="a", family_name="b", username="c"))


def test_registering_the_same_version_twice_raises() -> None:
    registry = EventRegistry()
    registry.register(ProfileChanged)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ProfileChanged)


def test_registering_an_older_version_after_a_newer_raises() -> None:
    registry = profile_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ProfileChanged, 2, {1: v1_to_v2})


def test_registering_an_upcaster_twice_raises() -> None:
    registry = EventRegistry()
    registry.register(ProfileChanged, 2, {1: v1_to_v2})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ProfileChanged, 3, {1: v1_to_v2, 2: v2_to_v3})
    assert registry.current_version("test.profile.changed") == 2  # unchanged


@pytest.mark.parametrize(
    ("version", "upcasters"),
    [
        (2, {}),
        (3, {1: v1_to_v2}),
        (3, {2: v2_to_v3}),
        (4, {1: v1_to_v2, 3: v2_to_v3}),
    ],
)
def test_a_gap_in_the_chain_raises_at_registration(version: int, upcasters: dict[int, Any]) -> None:
    registry = EventRegistry()
    with pytest.raises(ValueError, match="gap"):
        registry.register(ProfileChanged, version, upcasters)
    assert "test.profile.changed" not in registry.type_names()


@pytest.mark.parametrize("bad", [0, 3, -1])
def test_an_upcaster_outside_the_chain_raises(bad: int) -> None:
    with pytest.raises(ValueError, match="outside the chain"):
        EventRegistry().register(ProfileChanged, 2, {1: v1_to_v2, bad: v2_to_v3})


@pytest.mark.parametrize("version", [0, -1])
def test_versions_start_at_one(version: int) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        EventRegistry().register(ProfileChanged, version)


def test_only_domain_event_classes_register() -> None:
    with pytest.raises(TypeError):
        EventRegistry().register(model.Tenant)  # type: ignore[arg-type]


def test_data_that_does_not_fit_the_class_raises() -> None:
    with pytest.raises(msgspec.ValidationError):
        profile_registry().decode("test.profile.changed", 3, {"given_name": "a"})


# --- the default registry: every domain event, round trip ----------------------------------

ALL_CLASSES: tuple[type[model.DomainEvent], ...] = typing.get_args(model.AnyDomainEvent)


def test_default_registry_holds_every_domain_event_at_v1() -> None:
    tags = {str(cls.__struct_config__.tag) for cls in ALL_CLASSES}
    assert REGISTRY.type_names() == tags
    for cls in ALL_CLASSES:
        tag = str(cls.__struct_config__.tag)
        assert REGISTRY.current_version(tag) == 1
        assert REGISTRY.event_class(tag) is cls


_ulids = st.builds(
    ids.encode_ulid,
    st.integers(0, ids.MAX_TIMESTAMP_MS),
    st.integers(0, ids.MAX_RANDOMNESS),
)
_times = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
_text = st.text(max_size=20)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_objects = st.dictionaries(_text, _json, max_size=4)

_tenants = st.builds(
    model.Tenant,
    id=_ulids,
    slug=_text,
    name=_text,
    disabled=st.booleans(),
    created_at=_times,
    updated_at=_times,
)
_receivers = st.builds(
    model.Receiver,
    id=_ulids,
    tenant_id=_ulids,
    name=_text,
    type=_text,
    version=_text,
    description=_text,
    schema=_objects,
    fingerprint=st.text("0123456789abcdef", min_size=64, max_size=64),
    created_at=_times,
)
_events = st.builds(
    model.Event,
    id=_ulids,
    tenant_id=_ulids,
    name=_text,
    version=_text,
    release=_text,
    platform_id=_text,
    package=_text,
    description=_text,
    payload=_objects,
    success=st.booleans(),
    event_receiver_id=_ulids,
    created_at=_times,
)
_groups = st.builds(
    model.Group,
    id=_ulids,
    tenant_id=_ulids,
    name=_text,
    type=_text,
    version=_text,
    description=_text,
    enabled=st.booleans(),
    event_receiver_ids=st.lists(_ulids, min_size=1, max_size=5, unique=True).map(tuple),
    created_at=_times,
    updated_at=_times,
)
_completions = st.builds(
    model.Completion,
    id=_ulids,
    tenant_id=_ulids,
    group_id=_ulids,
    name=_text,
    version=_text,
    release=_text,
    platform_id=_text,
    package=_text,
    triggering_event_id=_ulids,
    member_event_ids=st.lists(_ulids, min_size=1, max_size=5).map(tuple),
    completed_at=_times,
)

STRATEGIES: dict[type[model.DomainEvent], st.SearchStrategy[model.DomainEvent]] = {
    model.TenantCreated: st.builds(model.TenantCreated, tenant=_tenants),
    model.TenantModified: st.builds(model.TenantModified, tenant=_tenants),
    model.ReceiverCreated: st.builds(model.ReceiverCreated, receiver=_receivers),
    model.EventRecorded: st.builds(model.EventRecorded, event=_events),
    model.GroupCreated: st.builds(model.GroupCreated, group=_groups),
    model.GroupModified: st.builds(model.GroupModified, group=_groups),
    model.GroupDeleted: st.builds(model.GroupDeleted, group=_groups),
    model.GroupCompleted: st.builds(model.GroupCompleted, completion=_completions),
}


def test_every_registered_type_has_a_round_trip_strategy() -> None:
    assert set(STRATEGIES) == set(ALL_CLASSES)


@given(st.one_of(*STRATEGIES.values()))
def test_every_domain_event_round_trips(event: model.DomainEvent) -> None:
    name, version, data = REGISTRY.encode(event)
    assert name == model.type_name(event)
    assert version == REGISTRY.current_version(name) == 1
    assert "type" not in data  # the envelope says the type
    assert REGISTRY.decode(name, version, data) == event
    # Through JSON, as a log row would store it.
    stored = msgspec.json.decode(msgspec.json.encode(data))
    assert stored == data  # plain JSON values, nothing a stored row would not give back
    assert REGISTRY.decode(name, version, stored) == event
    # Straight from the stored JSON text, as replay decodes it.
    assert REGISTRY.decode_json(name, version, msgspec.json.encode(data)) == event


def test_decode_json_upcasts_older_versions_even_after_a_type_moved_on() -> None:
    registry = EventRegistry()
    registry.register(ProfileChanged, 2, {1: v1_to_v2})
    current = b'{"given_name": "A", "family_name": "B", "username": "c"}'
    assert registry.decode_json("test.profile.changed", 2, current) == ProfileChanged(
        given_name="A", family_name="B", username="c"
    )
    registry.register(ProfileChanged, 3, {2: v2_to_v3})  # v2 is not current any more
    older = b'{"full_name": "Ada Lovelace", "username": "ada"}'
    assert registry.decode_json("test.profile.changed", 2, older) == ProfileChanged(
        given_name="Ada", family_name="Lovelace", username="ada"
    )
    with pytest.raises(UnknownEventType):
        registry.decode_json("test.profile.changed", 4, current)


@given(st.one_of(*STRATEGIES.values()), _ulids, st.integers(0, 2**62), st.booleans())
def test_envelopes_round_trip_through_json(
    event: model.DomainEvent, envelope_id: str, position: int, correlated: bool
) -> None:
    name, version, data = REGISTRY.encode(event)
    envelope = Envelope(
        id=envelope_id,
        type=name,
        schema_version=version,
        tenant_id="01HXAAAAAAAAAAAAAAAAAAAAAA",
        stream=model.stream_of(event),
        stream_version=1,
        position=position,
        correlation_id=envelope_id if correlated else None,
        causation_id=None,
        actor="user:01HXBBBBBBBBBBBBBBBBBBBBBB",
        occurred_at=datetime(2024, 5, 1, tzinfo=UTC),
        data=data,
    )
    again = msgspec.json.decode(msgspec.json.encode(envelope), type=Envelope)
    assert again == envelope
    assert REGISTRY.decode_envelope(again) == event


def test_decode_accepts_data_that_still_carries_its_tag() -> None:
    tenant = model.Tenant(
        id="T", slug="acme", name="Acme", created_at=datetime(2024, 1, 1, tzinfo=UTC),
        updated_at=datetime(2024, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    data = msgspec.to_builtins(model.TenantCreated(tenant=tenant))
    assert data["type"] == "tenant.created"
    assert REGISTRY.decode("tenant.created", 1, data) == model.TenantCreated(tenant=tenant)
    data["type"] = "tenant.modified"
    with pytest.raises(msgspec.ValidationError):
        REGISTRY.decode("tenant.created", 1, data)
