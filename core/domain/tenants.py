"""Tenants: slug and host rules, creation and patching.

A tenant is an isolated workspace. Its slug names it in URLs and message
sources (`/waypost/tenants/<slug>`); a host (for host-based resolution) is a
DNS name stored in its IDNA (ASCII) form.

Everything here is pure: ids and the time come in as arguments.
"""

from __future__ import annotations

import re
from datetime import datetime

import idna
import msgspec

from core.domain import commands, fields
from core.domain.errors import FieldError, Invalid, raise_if
from core.domain.model import Tenant

__all__ = [
    "MAX_HOST_LENGTH",
    "MAX_LABEL_LENGTH",
    "MAX_SLUG_LENGTH",
    "MIN_SLUG_LENGTH",
    "RESERVED_SLUGS",
    "new_tenant",
    "normalize_host",
    "normalize_slug",
    "patch_tenant",
]

MIN_SLUG_LENGTH = 3
MAX_SLUG_LENGTH = 63
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
# Longer raw input is refused before the IDNA codec sees it: no domain name,
# however mapped, comes from more text than this.
_MAX_RAW_HOST_LENGTH = 1024

# Every slug DOMAIN.md lists, plus a few more names that would read as the
# platform's own (well-known prefixes, mail/DNS infrastructure, the UI).
RESERVED_SLUGS: frozenset[str] = frozenset(
    {
        "api",
        "admin",
        "www",
        "app",
        "cdn",
        "assets",
        "static",
        "health",
        "healthz",
        "metrics",
        "docs",
        "swagger",
        "openapi",
        "mail",
        "smtp",
        "pop",
        "imap",
        "ftp",
        "sftp",
        "ssh",
        "vpn",
        "auth",
        "login",
        "logout",
        "register",
        "signup",
        "signin",
        "oauth",
        "token",
        "dev",
        "test",
        "staging",
        "prod",
        "production",
        "localhost",
        "db",
        "database",
        "cache",
        "redis",
        "postgres",
        "root",
        "system",
        "internal",
        "private",
        "public",
        "waypost",
        "administrator",
        "status",
        "jwks",
        "well-known",
        "webhook",
        "webhooks",
        "events",
        "receivers",
        "groups",
        "tenants",
        "tenant",
        "users",
        "keys",
        "console",
        "dashboard",
        "web",
        "www1",
        "www2",
        "ns1",
        "ns2",
        "pop3",
        "support",
        "help",
        "billing",
        "security",
    }
)

_SLUG_CHARS = re.compile(r"[a-z0-9-]+")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


def _slug_errors(slug: str) -> list[str]:
    """Every rule a normalized slug breaks, as user-facing messages (empty when valid)."""
    problems: list[str] = []
    if not MIN_SLUG_LENGTH <= len(slug) <= MAX_SLUG_LENGTH:
        problems.append(
            f"must be {MIN_SLUG_LENGTH} to {MAX_SLUG_LENGTH} characters long (got {len(slug)})"
        )
    if slug and not _SLUG_CHARS.fullmatch(slug):
        bad = sorted({c for c in slug if not _SLUG_CHARS.fullmatch(c)})
        shown = " ".join(repr(c) for c in bad[:10])
        problems.append(
            f"may contain only lower-case letters a-z, digits 0-9 and '-' (found {shown})"
        )
    if slug and (slug[0] == "-" or slug[-1] == "-"):
        problems.append("must start and end with a letter or digit")
    if "--" in slug:
        problems.append("must not contain '--'")
    if slug in RESERVED_SLUGS:
        problems.append(f"'{slug}' is reserved")
    return problems


def _check_slug(errors: list[FieldError], field: str, raw: str) -> str:
    slug = raw.strip().lower()
    errors.extend(FieldError(field, message) for message in _slug_errors(slug))
    return slug


def normalize_slug(raw: str) -> str:
    """The stored form of a slug: trimmed, lower-cased, then checked.

    Raises `Invalid` with one `FieldError("/slug", ...)` per broken rule.
    """
    errors: list[FieldError] = []
    slug = _check_slug(errors, "/slug", raw)
    raise_if(errors, "Invalid tenant slug")
    return slug


def normalize_host(raw: str) -> str:
    """The stored form of a host name: IDNA (ASCII) encoded and lower-cased.

    Surrounding whitespace is trimmed; Unicode input is mapped by UTS 46 (so
    `Bücher.Example` becomes `xn--bcher-kva.example`). A single trailing dot
    (the DNS root, `example.com.`) is accepted and dropped: the stored form
    never ends with a dot, so both spellings resolve to the same tenant. The
    result is at most 253 characters; every label is 1 to 63 characters of
    `a-z`, `0-9` and `-`, not starting or ending with `-`. Ports, paths,
    underscores and empty labels are refused.

    Raises `Invalid` with a `FieldError("/host", ...)`.
    """
    field = "/host"
    text = raw.strip()
    if not text:
        raise Invalid("Invalid host", [FieldError(field, "must not be empty")])
    if len(text) > _MAX_RAW_HOST_LENGTH:
        raise Invalid(
            "Invalid host",
            [FieldError(field, f"must be at most {MAX_HOST_LENGTH} characters")],
        )
    try:
        encoded = idna.encode(text, uts46=True).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError is a UnicodeError
        raise Invalid(
            "Invalid host",
            [FieldError(field, f"is not a valid domain name: {exc}")],
        ) from None
    host = encoded.lower()
    if host.endswith("."):
        host = host[:-1]
    problems: list[str] = []
    if not host:
        problems.append("must not be empty")
    elif len(host) > MAX_HOST_LENGTH:
        problems.append(f"must be at most {MAX_HOST_LENGTH} characters (got {len(host)})")
    for label in host.split(".") if host else ():
        if not label:
            problems.append("must not contain an empty label")
        elif len(label) > MAX_LABEL_LENGTH:
            problems.append(f"label '{label[:20]}...' is longer than {MAX_LABEL_LENGTH}")
        elif not _LABEL.fullmatch(label):
            problems.append(
                f"label '{label}' must be letters, digits and '-', not starting or ending with '-'"
            )
    if problems:
        raise Invalid("Invalid host", [FieldError(field, message) for message in problems])
    return host


def new_tenant(cmd: commands.CreateTenant, *, id: str, now: datetime) -> Tenant:
    """A new, enabled tenant; every problem with the command is reported at once."""
    errors: list[FieldError] = []
    slug = _check_slug(errors, "/slug", cmd.slug)
    fields.check_name(errors, "/name", cmd.name)
    raise_if(errors, "Invalid tenant")
    return Tenant(
        id=id,
        slug=slug,
        name=cmd.name,
        disabled=False,
        created_at=now,
        updated_at=now,
    )


def patch_tenant(tenant: Tenant, cmd: commands.PatchTenant, *, now: datetime) -> Tenant:
    """The tenant with the patch applied; the very same object if nothing changes.

    A field left out of the patch (None) is kept. The slug never changes.
    """
    errors: list[FieldError] = []
    if cmd.name is not None:
        fields.check_name(errors, "/name", cmd.name)
    raise_if(errors, "Invalid tenant")
    name = tenant.name if cmd.name is None else cmd.name
    disabled = tenant.disabled if cmd.disabled is None else cmd.disabled
    if name == tenant.name and disabled == tenant.disabled:
        return tenant
    return msgspec.structs.replace(tenant, name=name, disabled=disabled, updated_at=now)
