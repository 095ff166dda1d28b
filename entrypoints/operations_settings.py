"""The checks of the operations settings (logging, tracing, the read replica, the audit log,
service identities), kept apart from `settings.py` so that each room validates its own.

A bad value stops the start with a message naming the setting, as every other setting does.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509

if TYPE_CHECKING:
    from entrypoints.settings import Settings

#: Level names `log.levels` accepts (those of the `logging` module).
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")
#: The roles a service identity may have: a tenant's (never the platform's).
SERVICE_ROLES = ("admin", "event_manager", "event_viewer", "event_producer")
#: The schemes of a service identity's `match` that name a subject alternative name.
SAN_SCHEMES = ("dns", "uri", "email", "ip")


def check_operations(settings: Settings) -> str | None:
    """What is wrong with the operations settings, naming the setting (None: nothing)."""
    for check in (_log, _tracing, _database, _audit, _service_identities):
        problem = check(settings)
        if problem is not None:
            return problem
    return None


def _log(settings: Settings) -> str | None:
    log = settings.log
    for name, level in log.levels.items():
        if level.upper() not in LEVELS:
            return f"log.levels: {name}={level} is not a level ({', '.join(LEVELS[:-1])})"
        if not name or any(part == "" for part in name.split(".")):
            return f"log.levels: {name!r} is not a logger name"
    if not (math.isfinite(log.slow_query_ms) and log.slow_query_ms >= 0):
        return "log.slow_query_ms must be 0 (never) or a positive number"
    return None


def _tracing(settings: Settings) -> str | None:
    tracing = settings.tracing
    if tracing.otlp_endpoint is not None:
        parts = urlsplit(tracing.otlp_endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "tracing.otlp_endpoint must be an http:// or https:// URL"
    ratio = tracing.sample_ratio
    if ratio is not None and not (math.isfinite(ratio) and 0 <= ratio <= 1):
        return "tracing.sample_ratio must be between 0 and 1"
    if not tracing.service_name.strip():
        return "tracing.service_name must not be blank"
    return None


def _database(settings: Settings) -> str | None:
    database = settings.database
    if database.read_url is not None:
        scheme = database.read_url.split(":", 1)[0].split("+", 1)[0]
        primary = database.url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("postgresql", "postgres") or primary not in ("postgresql", "postgres"):
            return (
                "database.read_url (a read replica) needs PostgreSQL: both database.url and "
                "database.read_url must be postgresql:// URLs"
            )
    if not (math.isfinite(database.read_max_lag_seconds) and database.read_max_lag_seconds > 0):
        return "database.read_max_lag_seconds must be a positive number"
    return None


def _audit(settings: Settings) -> str | None:
    if not 0 <= settings.audit.retention_days <= 36_500:
        return "audit.retention_days must be 0 (keep forever) to 36500"
    return None


def _service_identities(settings: Settings) -> str | None:
    seen: set[str] = set()
    for index, identity in enumerate(settings.http.service_identities):
        where = f"http.service_identities[{index}]"
        if identity.role not in SERVICE_ROLES:
            return f"{where}.role must be one of {', '.join(SERVICE_ROLES)}"
        problem = _match_problem(where, identity.match)
        if problem is not None:
            return problem
        if identity.match in seen:
            return f"{where}.match: {identity.match!r} is mapped twice"
        seen.add(identity.match)
        if settings.http.tls_client_ca_file is None:
            return (
                "http.service_identities need mTLS: set http.tls_client_ca_file (and the "
                "server's certificate)"
            )
    return None


def _match_problem(where: str, identity_match: str) -> str | None:
    scheme, colon, value = identity_match.partition(":")
    if colon and scheme.lower() in SAN_SCHEMES:
        if not value.strip():
            return f"{where}.match: {identity_match!r} names no value"
    elif "=" not in identity_match or not _is_subject(identity_match):
        return f"{where}.match must be a subject (CN=...) or dns:, uri:, email:, ip: and a value"
    if colon and scheme.lower() == "ip" and not _is_ip(value.strip()):
        return f"{where}.match: {value.strip()!r} is not an IP address"
    return None


def parse_subject(text: str) -> x509.Name:
    """A distinguished name from RFC 4514 text; spaces after the commas are allowed (as
    `openssl x509 -subject -nameopt RFC2253` and people write them)."""
    return x509.Name.from_rfc4514_string(re.sub(r"(?<!\\),\s+", ",", text.strip()))


def _is_subject(text: str) -> bool:
    try:
        parse_subject(text)
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def level_number(name: str) -> int:
    """The `logging` number of a level name `check_operations` accepted."""
    number = logging.getLevelName(name.upper())
    assert isinstance(number, int), name
    return number
