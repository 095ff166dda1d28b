"""Tenant rules: slugs, hosts, creation and patching."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import commands, tenants
from core.domain.errors import FieldError, Invalid
from core.domain.model import Tenant

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
TENANT_ID = "01HXAAAAAAAAAAAAAAAAAAAAAA"

_DOMAIN_MD_LIST = """
api admin www app cdn assets static health healthz metrics docs swagger openapi
mail smtp pop imap ftp sftp ssh vpn auth login logout register signup signin
oauth token dev test staging prod production localhost db database cache
redis postgres root system internal private public waypost
"""
DOMAIN_MD_RESERVED = _DOMAIN_MD_LIST.split()

SLUG_SHAPE = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]")


def messages(exc: pytest.ExceptionInfo[Invalid], field: str) -> list[str]:
    return [e.message for e in exc.value.errors if e.field == field]


# --- slugs ---------------------------------------------------------------------------------


def test_reserved_slugs_cover_domain_md() -> None:
    assert set(DOMAIN_MD_RESERVED) <= tenants.RESERVED_SLUGS


@pytest.mark.parametrize("slug", DOMAIN_MD_RESERVED)
def test_every_reserved_slug_is_refused(slug: str) -> None:
    with pytest.raises(Invalid) as exc:
        tenants.normalize_slug(f"  {slug.upper()} ")
    assert f"'{slug}' is reserved" in messages(exc, "/slug")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("acme", "acme"),
        ("  Acme-Corp  ", "acme-corp"),
        ("abc", "abc"),
        ("a1b", "a1b"),
        ("123", "123"),
        ("a-b-c", "a-b-c"),
        ("x" * 63, "x" * 63),
        ("\tMiXeD9\n", "mixed9"),
    ],
)
def test_valid_slugs_are_normalized(raw: str, expected: str) -> None:
    assert tenants.normalize_slug(raw) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "3 to 63 characters long (got 0)"),
        ("   ", "3 to 63 characters long (got 0)"),
        ("ab", "3 to 63 characters long (got 2)"),
        ("x" * 64, "3 to 63 characters long (got 64)"),
        ("-abc", "must start and end with a letter or digit"),
        ("abc-", "must start and end with a letter or digit"),
        ("ab--cd", "must not contain '--'"),
        ("xn--abc", "must not contain '--'"),
        ("ab_cd", "may contain only lower-case letters a-z, digits 0-9 and '-' (found '_')"),
        ("ab.cd", "(found '.')"),
        ("ab cd", "(found ' ')"),
        ("caf\u00e9", "(found '\u00e9')"),
        ("\u0430bc", "(found '\u0430')"),  # Cyrillic a, a homoglyph
    ],
)
def test_invalid_slugs_say_why(raw: str, fragment: str) -> None:
    with pytest.raises(Invalid) as exc:
        tenants.normalize_slug(raw)
    found = messages(exc, "/slug")
    assert found, exc.value.errors
    assert any(fragment in m for m in found), found
    assert all(e.field == "/slug" for e in exc.value.errors)


def test_slug_rules_apply_after_lower_casing() -> None:
    # The Kelvin sign lower-cases to a plain ASCII "k": the normalized slug is valid.
    assert tenants.normalize_slug("ABC\u212a") == "abck"


def test_every_broken_slug_rule_is_reported() -> None:
    with pytest.raises(Invalid) as exc:
        tenants.normalize_slug("-_")
    found = messages(exc, "/slug")
    assert len(found) == 3  # too short, bad character, bad edge
    assert exc.value.detail == "Invalid tenant slug"


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_. ", max_size=70))
def test_slug_normalization_agrees_with_the_rule(raw: str) -> None:
    candidate = raw.strip().lower()
    ok = (
        SLUG_SHAPE.fullmatch(candidate) is not None
        and "--" not in candidate
        and candidate not in tenants.RESERVED_SLUGS
    )
    if ok:
        assert tenants.normalize_slug(raw) == candidate
        # Normalizing is idempotent.
        assert tenants.normalize_slug(candidate) == candidate
    else:
        with pytest.raises(Invalid):
            tenants.normalize_slug(raw)


# --- hosts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Acme.Example.COM", "acme.example.com"),
        ("  acme.example.com  ", "acme.example.com"),
        ("acme.example.com.", "acme.example.com"),  # a trailing dot (the root) is dropped
        ("localhost", "localhost"),
        ("b\u00fccher.example", "xn--bcher-kva.example"),
        ("B\u00dcCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("\u65e5\u672c\u8a9e.jp", "xn--wgv71a119e.jp"),
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\uff0ecom", "example.com"),  # full-width
        ("a-b.c-d.example", "a-b.c-d.example"),
        ("1.2.3.4", "1.2.3.4"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_valid_hosts_are_normalized(raw: str, expected: str) -> None:
    assert tenants.normalize_host(raw) == expected


def test_host_of_exactly_253_characters_is_accepted() -> None:
    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(host) == 253
    assert tenants.normalize_host(host) == host
    assert tenants.normalize_host(host + ".") == host


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        ".",
        "example..com",
        "example.com..",
        ".example.com",
        "-acme.example",
        "acme-.example",
        "acme.-example",
        "ac_me.example",
        "acme.example:8080",
        "acme.example/path",
        "user@acme.example",
        "acme example",
        "a" * 64 + ".example",
        ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62]),  # 254 characters
        "x" * 5000,
        "a\u200db.example",  # a joiner outside its allowed context
    ],
)
def test_invalid_hosts_are_refused_on_the_host_field(raw: str) -> None:
    with pytest.raises(Invalid) as exc:
        tenants.normalize_host(raw)
    assert exc.value.errors
    assert all(e.field == "/host" for e in exc.value.errors)
    assert all(e.message for e in exc.value.errors)


_LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\Z").filter(
    lambda label: label[2:4] != "--"
)


@given(st.lists(_LABEL, min_size=1, max_size=5), st.booleans(), st.booleans())
def test_ascii_hosts_round_trip(labels: list[str], upper: bool, trailing_dot: bool) -> None:
    host = ".".join(labels)
    raw = host.upper() if upper else host
    if trailing_dot:
        raw += "."
    normalized = tenants.normalize_host(raw)
    assert normalized == host
    assert tenants.normalize_host(normalized) == normalized


@given(st.text(max_size=40))
def test_any_text_gives_a_valid_host_or_a_host_error(raw: str) -> None:
    try:
        host = tenants.normalize_host(raw)
    except Invalid as exc:
        refused: Invalid | None = exc
    else:
        refused = None
    if refused is not None:
        assert all(e.field == "/host" for e in refused.errors)
        return
    assert len(host) <= 253
    assert host.isascii()
    assert host == host.lower()
    for label in host.split("."):
        assert 1 <= len(label) <= 63
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", label)
    assert tenants.normalize_host(host) == host


# --- creation and patching -----------------------------------------------------------------


def test_new_tenant() -> None:
    tenant = tenants.new_tenant(
        commands.CreateTenant(slug="  Acme ", name="Acme Corp"), id=TENANT_ID, now=T0
    )
    assert tenant == Tenant(
        id=TENANT_ID,
        slug="acme",
        name="Acme Corp",
        disabled=False,
        created_at=T0,
        updated_at=T0,
    )


def test_new_tenant_collects_every_error() -> None:
    with pytest.raises(Invalid) as exc:
        tenants.new_tenant(commands.CreateTenant(slug="admin", name="   "), id=TENANT_ID, now=T0)
    assert set(exc.value.errors) == {
        FieldError("/slug", "'admin' is reserved"),
        FieldError("/name", "must not be blank"),
    }
    assert exc.value.detail == "Invalid tenant"


def test_new_tenant_name_at_most_255() -> None:
    assert tenants.new_tenant(
        commands.CreateTenant(slug="acme", name="n" * 255), id=TENANT_ID, now=T0
    ).name == ("n" * 255)
    with pytest.raises(Invalid) as exc:
        tenants.new_tenant(commands.CreateTenant(slug="acme", name="n" * 256), id=TENANT_ID, now=T0)
    assert [e.field for e in exc.value.errors] == ["/name"]


@pytest.fixture
def tenant() -> Tenant:
    return tenants.new_tenant(commands.CreateTenant(slug="acme", name="Acme"), id=TENANT_ID, now=T0)


def test_patch_with_nothing_returns_the_same_object(tenant: Tenant) -> None:
    assert tenants.patch_tenant(tenant, commands.PatchTenant(), now=T1) is tenant


def test_patch_with_the_same_values_returns_the_same_object(tenant: Tenant) -> None:
    cmd = commands.PatchTenant(name="Acme", disabled=False)
    assert tenants.patch_tenant(tenant, cmd, now=T1) is tenant


def test_patch_name(tenant: Tenant) -> None:
    patched = tenants.patch_tenant(tenant, commands.PatchTenant(name="Acme Inc"), now=T1)
    assert patched.name == "Acme Inc"
    assert patched.disabled is False
    assert patched.slug == tenant.slug
    assert patched.created_at == T0
    assert patched.updated_at == T1
    assert tenant.name == "Acme"  # the original is untouched


def test_patch_disable_and_enable(tenant: Tenant) -> None:
    disabled = tenants.patch_tenant(tenant, commands.PatchTenant(disabled=True), now=T1)
    assert disabled.disabled is True
    assert disabled.name == "Acme"
    assert disabled.updated_at == T1
    enabled = tenants.patch_tenant(disabled, commands.PatchTenant(disabled=False), now=T0)
    assert enabled.disabled is False


def test_patch_refuses_a_blank_name(tenant: Tenant) -> None:
    with pytest.raises(Invalid) as exc:
        tenants.patch_tenant(tenant, commands.PatchTenant(name=" ", disabled=True), now=T1)
    assert exc.value.errors == (FieldError("/name", "must not be blank"),)
