"""Typed settings: defaults that need nothing, an optional TOML file, then the environment.

Environment variables are `WAYPOST__SECTION__KEY` (e.g. `WAYPOST__DATABASE__URL`,
`WAYPOST__HTTP__PORT`); top-level keys are `WAYPOST__KEY` (`WAYPOST__MODE`). The
file named by `WAYPOST__CONFIG` (TOML, same sections) is read first; the
environment wins. A bad value stops the start with a message naming the setting.
"""

from __future__ import annotations

import ipaddress
import math
import pathlib
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

PREFIX = "WAYPOST__"
CONFIG_VARIABLE = "WAYPOST__CONFIG"


class SettingsError(Exception):
    """A setting is missing, malformed or out of range; the message names it."""


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `memory://`, a SQLite path or URL (`sqlite:///./waypost.db`), or a PostgreSQL URL.
    url: str = "sqlite:///./waypost.db"
    #: Group commit: events of one tenant recorded while one of its transactions runs
    #: share the next, up to this many requests (1: every request commits alone) ...
    group_commit_max_writes: int = 64
    #: ... and this many events (a larger batch still commits, alone).
    group_commit_max_events: int = 1000


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8042
    #: Largest request body of a single-event or other POST (413 above).
    max_body_bytes: int = 1024 * 1024 + 64 * 1024
    #: Largest body of `POST /api/v1/events/batch` (413 above).
    max_batch_body_bytes: int = 16 * 1024 * 1024
    #: Seconds in-flight requests get to finish on SIGTERM.
    shutdown_grace_seconds: float = 30.0
    #: TLS: the server's certificate chain and private key (PEM files); both or neither.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: mTLS: with a CA file (PEM), every client must present a certificate it issued.
    tls_client_ca_file: str | None = None
    #: Origins (`https://app.example.com`) that browsers may call the API from. Empty: no
    #: CORS at all. `*` is refused in production mode. Environment: comma-separated.
    cors_origins: list[str] = msgspec.field(default_factory=list)


class SecuritySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `iss` and `aud` of the access tokens this server issues and accepts.
    issuer: str = "waypost"
    audience: str = "waypost-api"
    access_token_ttl_seconds: int = 900
    #: Where platform administrators may connect from (CIDRs, IPv4 and IPv6); their
    #: credentials are refused from anywhere else. Environment: comma-separated.
    admin_networks: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])


class SecretsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: The master key (base64 or hex of at least 32 random bytes, e.g. from `waypost
    #: secrets new-master-key`) that seals every stored secret; or a file holding it.
    #: Without either, development mode keeps a generated one next to the SQLite
    #: database; production mode refuses to start.
    master_key: str | None = None
    master_key_file: str | None = None
    #: Algorithm of new JWT signing keys: EdDSA (Ed25519) or RS256.
    signing_algorithm: Literal["EdDSA", "RS256"] = "EdDSA"
    rotate_every_days: float = 30.0
    #: How long a signing key keeps verifying after a newer one took over; at least the
    #: access-token lifetime plus the 60 s leeway plus `reload_seconds`.
    grace_seconds: int = 3600
    #: How long before it signs a new key is published in the JWKS.
    prepublish_hours: float = 24.0
    #: How often a server applies the rotation policy and picks up keys rotated elsewhere
    #: (`waypost secrets rotate`, another server).
    reload_seconds: float = 60.0

    def __repr__(self) -> str:
        return "SecretsSettings(...)"  # never print a master key


class LogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the server logs, and how."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: `text` for a terminal; `json`: one JSON object per line, for a log pipeline.
    format: Literal["text", "json"] = "text"


class LimitsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rate limits (429) and backpressure (503), per server process."""

    #: Requests per second each credential (API key, or user's token) may make on
    #: average; above it, 429 with Retry-After. Batches count as one request.
    requests_per_second: float = 200.0
    #: Requests a credential may make at once above that rate (its bucket's size).
    burst: int = 400
    #: Requests per minute to the token endpoints (`/api/v1/auth/...`) from one client
    #: address: password guessing is slowed down to this pace.
    auth_requests_per_minute: float = 60.0
    auth_burst: int = 20
    #: API requests being served at once, all callers together; above it, 503 with
    #: Retry-After, at once, rather than a queue that grows without bound.
    max_in_flight: int = 256
    #: Live message streams (`GET /api/v1/messages`) open at once; above it, 503.
    max_streams: int = 100
    #: Callers whose allowance is remembered (least recently seen forgotten first).
    tracked_callers: int = 100_000


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`GET /metrics` (Prometheus text format) and the request counting behind it."""

    #: False: no `/metrics` route (404) and no metrics middleware at all.
    enabled: bool = True
    #: Where the metrics may be read from (CIDRs, IPv4 and IPv6); anywhere else gets 403.
    #: Empty: anyone may read them. Environment: comma-separated.
    allowed_networks: list[str] = msgspec.field(default_factory=list)


class RedisStreamsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Publishing every tenant's messages to a Redis stream (`waypost:<slug>:messages`)."""

    #: A `redis://`, `rediss://` or `unix://` URL; none: messages are not sent to Redis.
    url: str | None = None
    #: About how many entries each tenant's stream keeps (older ones are trimmed).
    max_length: int = 100_000
    #: How often an idle publisher looks for new messages.
    poll_seconds: float = 0.25

    def __repr__(self) -> str:
        return "RedisStreamsSettings(...)"  # the URL may hold a password


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `development` applies pending migrations at start; `production` refuses to start.
    mode: Literal["development", "production"] = "development"
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    secrets: SecretsSettings = msgspec.field(default_factory=SecretsSettings)
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    redis_streams: RedisStreamsSettings = msgspec.field(default_factory=RedisStreamsSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)

    def __post_init__(self) -> None:
        if not 0 < self.http.port < 65536:
            raise SettingsError(f"http.port must be 1..65535, not {self.http.port}")
        if self.http.max_body_bytes < 1024 or self.http.max_batch_body_bytes < 1024:
            raise SettingsError("http body limits must be at least 1024 bytes")
        if self.http.shutdown_grace_seconds < 0:
            raise SettingsError("http.shutdown_grace_seconds must not be negative")
        scheme = self.database.url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in {"memory", "sqlite", "postgresql", "postgres"}:
            raise SettingsError(
                "database.url must be memory://, a sqlite:/// URL or a postgresql:// URL, "
                f"not {self.database.url!r}"
            )
        if not 1 <= self.database.group_commit_max_writes <= 10_000:
            raise SettingsError("database.group_commit_max_writes must be 1..10000")
        if not 1 <= self.database.group_commit_max_events <= 100_000:
            raise SettingsError("database.group_commit_max_events must be 1..100000")
        self._check_tls()
        self._check_security()
        self._check_secrets()
        self._check_limits()
        self._check_redis_streams()
        self._check_metrics()

    def _check_tls(self) -> None:
        http = self.http
        if (http.tls_cert_file is None) != (http.tls_key_file is None):
            raise SettingsError("http.tls_cert_file and http.tls_key_file go together")
        if http.tls_client_ca_file is not None and http.tls_cert_file is None:
            raise SettingsError("http.tls_client_ca_file (mTLS) needs http.tls_cert_file")
        for origin in http.cors_origins:
            if origin == "*":
                if self.mode == "production":
                    raise SettingsError(
                        "http.cors_origins: a wildcard (*) is refused in production mode; "
                        "name each origin"
                    )
            elif not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    f"http.cors_origins: {origin!r} is not an origin (scheme://host[:port])"
                )

    def _check_security(self) -> None:
        security = self.security
        if not 60 <= security.access_token_ttl_seconds <= 86_400:
            raise SettingsError("security.access_token_ttl_seconds must be 60..86400")
        if not security.issuer.strip() or not security.audience.strip():
            raise SettingsError("security.issuer and security.audience must not be blank")
        for network in security.admin_networks:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise SettingsError(
                    f"security.admin_networks: {network!r} is not a network (CIDR)"
                ) from None

    def _check_metrics(self) -> None:
        for network in self.metrics.allowed_networks:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise SettingsError(
                    f"metrics.allowed_networks: {network!r} is not a network (CIDR)"
                ) from None

    def _check_redis_streams(self) -> None:
        streams = self.redis_streams
        scheme = (streams.url or "redis:").split(":", 1)[0]
        if scheme not in {"redis", "rediss", "unix"}:
            raise SettingsError(
                "redis_streams.url must be a redis://, rediss:// or unix:// URL"
            )  # the URL itself is not repeated: it may hold a password
        if streams.max_length < 1:
            raise SettingsError("redis_streams.max_length must be at least 1")
        if not 0.01 <= streams.poll_seconds <= 60:
            raise SettingsError("redis_streams.poll_seconds must be 0.01..60")

    def _check_limits(self) -> None:
        limits = self.limits
        for name, rate in (
            ("requests_per_second", limits.requests_per_second),
            ("auth_requests_per_minute", limits.auth_requests_per_minute),
        ):
            if not (math.isfinite(rate) and rate > 0):
                raise SettingsError(f"limits.{name} must be a positive number")
        for name, count in (
            ("burst", limits.burst),
            ("auth_burst", limits.auth_burst),
            ("max_in_flight", limits.max_in_flight),
            ("max_streams", limits.max_streams),
            ("tracked_callers", limits.tracked_callers),
        ):
            if count < 1:
                raise SettingsError(f"limits.{name} must be at least 1")

    def _check_secrets(self) -> None:
        secrets = self.secrets
        if secrets.master_key is not None and secrets.master_key_file is not None:
            raise SettingsError("secrets.master_key and secrets.master_key_file exclude each other")
        if not 1 <= secrets.reload_seconds <= 3600:
            raise SettingsError("secrets.reload_seconds must be 1..3600")
        if secrets.rotate_every_days <= 0:
            raise SettingsError("secrets.rotate_every_days must be positive")
        if not 0 <= secrets.prepublish_hours < secrets.rotate_every_days * 24:
            raise SettingsError("secrets.prepublish_hours must be 0 or more and below the rotation")
        # A server may sign with a demoted key until its next reload.
        needed = self.security.access_token_ttl_seconds + 60 + int(secrets.reload_seconds)
        if secrets.grace_seconds < needed:
            raise SettingsError(
                f"secrets.grace_seconds must be at least the access-token lifetime plus the "
                f"leeway and secrets.reload_seconds ({needed} s), so that no token dies "
                "because its key rotated"
            )


_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)
#: Settings that are lists: the environment gives them comma-separated.
_LISTS = (
    ("http", "cors_origins"),
    ("security", "admin_networks"),
    ("metrics", "allowed_networks"),
)


def _nest(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(PREFIX) or name == CONFIG_VARIABLE:
            continue
        path = [part.lower() for part in name[len(PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"{name}: {'.'.join(path[:-1])} is a value, not a section")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise SettingsError(f"{name}: {'.'.join(path)} is a section, not a value")
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from the TOML file named by WAYPOST__CONFIG (if any), then the environment."""
    raw: dict[str, Any] = {}
    config = environ.get(CONFIG_VARIABLE)
    if config:
        path = pathlib.Path(config)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{CONFIG_VARIABLE}: cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{CONFIG_VARIABLE}: {path} is not valid TOML: {exc}") from None
    raw = _merge(raw, _nest(environ))
    for section, key in _LISTS:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = [part.strip() for part in node[key].split(",") if part.strip()]
    try:
        # strict=False lets environment strings become ints, floats and bools.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {_env_path(str(exc))}") from None


def _env_path(message: str) -> str:
    """msgspec says `at $.http.port`; users set WAYPOST__HTTP__PORT."""
    if "`$." in message:
        head, _, rest = message.partition("`$.")
        path, _, tail = rest.partition("`")
        name = PREFIX + path.replace(".", "__").upper()
        return f"{head}{name} ({path}){tail}"
    return message
