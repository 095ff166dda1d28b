"""Subscription rules: the URL policy, filters and their matching, who gets which message."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_network

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.errors import FieldError, Invalid
from core.domain.messages import CloudEvent, MessageData
from core.domain.subscriptions import (
    MAX_URL_LENGTH,
    Subscription,
    SubscriptionFilter,
    UrlPolicy,
    check_url,
    matches,
    new_subscription,
    ordering_key,
    patched,
    recipients,
    wants,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)
ID = "01JNZ3NDEKTSV4RRFFQ69G5FAV"
OTHER_ID = "01JNZ3NDEKTSV4RRFFQ69G5FAW"
PRODUCTION = UrlPolicy()
DEVELOPMENT = UrlPolicy(allow_http=True)


def url_errors(url: str, policy: UrlPolicy = PRODUCTION) -> list[str]:
    errors: list[FieldError] = []
    check_url(errors, "/url", url, policy)
    assert len(errors) <= 1
    return [e.message for e in errors]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hooks",
        "https://example.com",
        "https://EXAMPLE.com:8443/a/b?c=d&e=f",
        "HTTPS://hooks.example.co.uk/x",
        "https://a-b.example/",
        "https://93.184.215.14/hook",  # a public literal address
        "https://[2606:2800:220:1:248:1893:25c8:1946]:443/x",
        "https://xn--bcher-kva.example/",
        "https://localhost/x",  # a name: judged at connection time, on what it resolves to
    ],
)
def test_urls_the_policy_accepts(url: str) -> None:
    assert url_errors(url) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "1 to 2048"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, "1 to 2048"),
        ("http://example.com/", "https"),
        ("ftp://example.com/", "https"),
        ("example.com/hook", "absolute"),
        ("//example.com/hook", "absolute"),
        ("https:/example.com", "absolute"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("https://exa mple.com/", "spaces"),
        ("https://bücher.example/", "ASCII"),
        ("https://example.com:0/", "port"),
        ("https://example.com:65536/", "port"),
        ("https://example.com:http/", "port"),
        ("https:///path", "host"),
        ("https://-bad-.example/", "host"),
        ("https://exa_mple..com/", "host"),
        ("https://[::1/", "host"),
        ("https://127.0.0.1/", "loopback"),
        ("https://10.1.2.3/", "private"),
        ("https://169.254.169.254/latest", "link-local"),
        ("https://100.64.0.1/", "shared"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("https://2130706433/", "127.0.0.1"),
        ("https://0x7f.1/", "127.0.0.1"),
        ("https://017700000001/", "127.0.0.1"),
        ("https://127.1/", "127.0.0.1"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://[fe80::1]/", "link-local"),
    ],
)
def test_urls_the_policy_refuses(url: str, why: str) -> None:
    found = url_errors(url)
    assert found, url
    assert why in found[0], found


def test_development_allows_plain_http() -> None:
    assert url_errors("http://example.com/", DEVELOPMENT) == []


def test_an_allowed_network_lifts_the_refusal_of_its_literals() -> None:
    loopback = UrlPolicy(allow_http=True, allowed=(ip_network("127.0.0.0/8"),))
    assert url_errors("http://127.0.0.1:9000/hook", loopback) == []
    assert url_errors("http://2130706433:9000/hook", loopback) == []
    assert "private" in url_errors("http://10.0.0.1/", loopback)[0]


@given(st.text(max_size=300))
def test_any_text_is_judged_without_an_exception(text: str) -> None:
    url_errors(text, DEVELOPMENT)
    url_errors("https://" + text, PRODUCTION)


# --- new and patched ---------------------------------------------------------------------------


def make(**over: object) -> Subscription:
    given_: dict[str, object] = {
        "id": ID,
        "tenant_id": "t1",
        "name": "deploys",
        "url": "https://example.com/hooks",
        "description": "",
        "enabled": True,
        "filter": SubscriptionFilter(),
        "ordering": "none",
        "now": NOW,
        "policy": PRODUCTION,
    }
    given_.update(over)
    return new_subscription(**given_)  # type: ignore[arg-type]


def test_a_new_subscription() -> None:
    made = make()
    assert (made.name, made.enabled, made.ordering, made.created_at) == (
        "deploys",
        True,
        "none",
        NOW,
    )
    assert made.disabled_reason is None
    assert made.failing_since is None


def test_every_error_is_listed_at_once() -> None:
    with pytest.raises(Invalid) as refused:
        make(
            name=" ",
            description="x" * 4097,
            url="http://127.0.0.1/",
            filter=SubscriptionFilter(
                types=(),
                subjects=("not-an-id", ID, ID),
                name="",
                package="p" * 256,
            ),
        )
    fields = {e.field for e in refused.value.errors}
    assert fields == {
        "/name",
        "/description",
        "/url",
        "/filter/types",
        "/filter/subjects/0",
        "/filter/subjects/2",
        "/filter/name",
        "/filter/package",
    }


def test_filter_lists_are_bounded() -> None:
    make(filter=SubscriptionFilter(types=tuple(f"t{i}" for i in range(100))))
    with pytest.raises(Invalid):
        make(filter=SubscriptionFilter(types=tuple(f"t{i}" for i in range(101))))
    with pytest.raises(Invalid):
        make(filter=SubscriptionFilter(types=("a", "a")))
    with pytest.raises(Invalid):
        make(filter=SubscriptionFilter(types=("t" * 256,)))


def test_a_patch_changes_only_what_it_names() -> None:
    made = make()
    assert patched(made, now=NOW, policy=PRODUCTION) is made
    assert patched(made, name="deploys", now=NOW, policy=PRODUCTION) is made
    later = datetime(2026, 3, 2, tzinfo=UTC)
    changed = patched(made, description="new", ordering="artifact", now=later, policy=PRODUCTION)
    assert (changed.description, changed.ordering, changed.updated_at) == ("new", "artifact", later)
    assert changed.name == made.name
    with pytest.raises(Invalid):
        patched(made, url="http://example.com", now=later, policy=PRODUCTION)


def test_enabling_a_disabled_one_clears_its_reason_and_failing_streak() -> None:
    broken = msgspec.structs.replace(
        make(), enabled=False, disabled_reason="the target answered 410 Gone", failing_since=NOW
    )
    enabled = patched(broken, enabled=True, now=NOW, policy=PRODUCTION)
    assert enabled.enabled
    assert enabled.disabled_reason is None
    assert enabled.failing_since is None
    still = patched(broken, description="x", now=NOW, policy=PRODUCTION)
    assert not still.enabled
    assert still.disabled_reason == broken.disabled_reason


# --- matching --------------------------------------------------------------------------------


def message(**over: object) -> CloudEvent:
    fields: dict[str, object] = {
        "specversion": "1.0",
        "id": ID,
        "source": "/waypost/tenants/acme",
        "type": "ci.build",
        "subject": OTHER_ID,
        "time": NOW,
        "datacontenttype": "application/json",
        "success": True,
        "eventname": "shop",
        "eventversion": "2.1.0",
        "release": "1",
        "platformid": "x86_64",
        "package": "rpm",
        "tenant": "acme",
        "data": MessageData(),
    }
    fields.update(over)
    return CloudEvent(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("where", "matched"),
    [
        (SubscriptionFilter(), True),
        (SubscriptionFilter(types=("ci.build",)), True),
        (SubscriptionFilter(types=("ci.test", "ci.build")), True),
        (SubscriptionFilter(types=("ci.test",)), False),
        (SubscriptionFilter(subjects=(OTHER_ID,)), True),
        (SubscriptionFilter(subjects=(ID,)), False),
        (SubscriptionFilter(name="shop", version="2.1.0"), True),
        (SubscriptionFilter(name="shop", version="2.1.1"), False),
        (SubscriptionFilter(release="1", platform_id="x86_64", package="rpm"), True),
        (SubscriptionFilter(platform_id="aarch64"), False),
        (SubscriptionFilter(package="RPM"), False),  # exact: no case folding
        (SubscriptionFilter(success=True), True),
        (SubscriptionFilter(success=False), False),
        (SubscriptionFilter(types=("ci.build",), success=False), False),
    ],
)
def test_matches(where: SubscriptionFilter, matched: bool) -> None:
    assert matches(where, message()) is matched


def test_a_message_without_an_artifact_matches_no_artifact_filter() -> None:
    group_change = message(
        type="waypost.group.modified",
        success=None,
        eventname=None,
        eventversion=None,
        release=None,
        platformid=None,
        package=None,
    )
    assert matches(SubscriptionFilter(), group_change)
    assert not matches(SubscriptionFilter(name="shop"), group_change)
    assert not matches(SubscriptionFilter(success=True), group_change)
    assert not matches(SubscriptionFilter(success=False), group_change)


_parts = st.one_of(st.none(), st.sampled_from(["a", "b"]))


@given(
    st.builds(
        SubscriptionFilter,
        types=st.one_of(st.none(), st.lists(st.sampled_from(["x", "y"]), min_size=1).map(tuple)),
        name=_parts,
        package=_parts,
        success=st.one_of(st.none(), st.booleans()),
    ),
    st.sampled_from(["x", "y"]),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["a", "b"]),
    st.booleans(),
)
def test_a_filter_is_the_and_of_its_parts(
    where: SubscriptionFilter, type_: str, name: str, package: str, success: bool
) -> None:
    sent = message(type=type_, eventname=name, package=package, success=success)
    parts = [
        where.types is None or type_ in where.types,
        where.name is None or where.name == name,
        where.package is None or where.package == package,
        where.success is None or where.success == success,
    ]
    assert matches(where, sent) == all(parts)
    # an empty filter matches all, and narrowing never matches more
    assert matches(SubscriptionFilter(), sent)


def test_who_gets_what() -> None:
    sub = msgspec.structs.replace(make(), start_position=10)
    other = msgspec.structs.replace(make(id=OTHER_ID), start_position=0)
    assert not wants(sub, message(), 10)  # committed before it was made
    assert wants(sub, message(), 11)
    ping = message(type="waypost.subscription.ping", subject=ID)
    narrow = msgspec.structs.replace(sub, filter=SubscriptionFilter(types=("nothing",)))
    assert wants(narrow, ping, 11)  # a ping reaches its subscription whatever the filter
    assert not wants(other, ping, 11)  # and no other
    assert recipients([sub, other, narrow], ping, 11) == [sub, narrow]
    disabled = message(type="waypost.subscription.disabled", subject=ID)
    assert recipients([sub, other], disabled, 11) == [sub, other]


def test_the_ordering_key_names_the_artifact() -> None:
    sub = make()
    ordered = make(ordering="artifact")
    assert ordering_key(sub, message()) is None
    key = ordering_key(ordered, message())
    assert key is not None
    assert len(key) == 64
    assert ordering_key(ordered, message(success=False, type="x")) == key
    assert ordering_key(ordered, message(release="2")) != key
    assert ordering_key(ordered, message(eventname=None)) is None
