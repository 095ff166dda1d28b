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

from core.domain.addresses import parse_networks
from core.domain.delivery import MAX_SCHEDULE_LENGTH as MAX_RETRIES
from entrypoints.operations_settings import check_operations

PREFIX = "WAYPOST__"
CONFIG_VARIABLE = "WAYPOST__CONFIG"


class SettingsError(Exception):
    """A setting is missing, malformed or out of range; the message names it."""


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `memory://`, a SQLite path or URL (`sqlite:///./waypost.db`), or a PostgreSQL URL
    #: (`postgresql://user@host:5432/db?sslmode=verify-full&application_name=waypost`: the
    #: usual libpq options `sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
    #: `application_name`, `connect_timeout` and `options` are understood).
    url: str = "sqlite:///./waypost.db"
    #: PostgreSQL: a file holding the password (a secret mounted by the orchestrator), used
    #: when the URL has none. Trailing newlines are ignored.
    password_file: str | None = None
    #: PostgreSQL: connections each server process keeps at most (per store).
    pool_size: int = 10
    #: SQLite: seconds a write waits for the database's one writer lock while another
    #: process holds it; then the request is answered 503 with Retry-After.
    busy_timeout_seconds: float = 10.0
    #: PostgreSQL: a streaming replica for reads that may be a little stale (lists, gets,
    #: message pages behind the head). Everything that decides stays on `url`.
    read_url: str | None = None
    #: Replica reads go to the primary while the replica is further behind than this.
    read_max_lag_seconds: float = 5.0

    def __repr__(self) -> str:
        return "DatabaseSettings(...)"  # the URLs may hold passwords


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8042
    #: Server processes `waypost serve` runs on that address (the command's `--workers`).
    workers: int = 1
    #: Reverse proxies and load balancers (CIDRs) whose forwarding header is believed: the
    #: client's address is then the rightmost address of that header that is not one of
    #: them. Empty (the default): the connection's own address, headers ignored.
    #: Environment: comma-separated.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    #: The header the trusted proxies set: `x-forwarded-for`, or `forwarded` (RFC 7239).
    #: Only that one is read: a proxy that appends to one passes the other on unchecked.
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
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
    #: mTLS service identities: client certificates mapped to a tenant principal with a
    #: role (TOML `[[http.service_identities]]`; see docs/how-to/security.md).
    service_identities: list[ServiceIdentity] = msgspec.field(default_factory=list)


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
    #: While rotating the master key (`waypost secrets rewrap`): the one before, which still
    #: opens what it sealed; new secrets are sealed under `master_key`.
    previous_master_key: str | None = None
    previous_master_key_file: str | None = None
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
    #: Levels of single loggers, over `level`: `{"waypost.sql" = "DEBUG"}`; environment:
    #: `waypost.sql=DEBUG,uvicorn.access=WARNING`.
    levels: dict[str, str] = msgspec.field(default_factory=dict)
    #: SQL statements slower than this (milliseconds) are logged (`waypost.sql`, WARNING)
    #: with their catalogue name and duration; 0: never.
    slow_query_ms: float = 500.0


class TracingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry traces, off unless an OTLP endpoint is given (here or as the standard
    `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)."""

    #: OTLP over HTTP: `http://collector:4318` (`/v1/traces` is added when no path is given).
    otlp_endpoint: str | None = None
    #: The share of new traces kept (0..1); a caller's sampled `traceparent` is followed.
    #: None: the SDK's `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default: all).
    sample_ratio: float | None = None
    #: `service.name` of the spans (`OTEL_SERVICE_NAME` wins when set).
    service_name: str = "waypost"


class AuditSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The audit log."""

    #: Records older than this many days are deleted (daily); 0: kept forever.
    retention_days: int = 0


class ServiceIdentity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A client certificate (mTLS) that is a tenant's principal: no bearer credential needed."""

    #: Matches the certificate's subject (RFC 4514, `CN=ci-runner,O=Example`) or, with a
    #: scheme, one of its subject alternative names: `dns:ci.example.com`,
    #: `uri:spiffe://example.com/ci`, `email:ci@example.com`.
    match: str
    #: The tenant's slug.
    tenant: str
    #: One tenant role: admin, event_manager, event_viewer, event_producer.
    role: str
    #: A name for the audit log (default: `match`).
    name: str | None = None


class LimitsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rate limits (429), shared by the server processes through Redis when `redis.url` is
    set (per process otherwise), and backpressure (503), per server process."""

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
    #: Requests waiting on a gate (`GET /api/v1/groups/{id}/status?wait=`) at once, per
    #: process; above it, 503. Each holds a connection and costs nothing else while it waits.
    max_waiters: int = 1000
    #: Callers whose allowance is remembered (least recently seen forgotten first).
    tracked_callers: int = 100_000


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`GET /metrics` (Prometheus text format) and the request counting behind it."""

    #: False: no `/metrics` route (404) and no metrics middleware at all.
    enabled: bool = True
    #: Where the metrics may be read from (CIDRs, IPv4 and IPv6); anywhere else gets 403.
    #: Empty: anyone may read them. Environment: comma-separated.
    allowed_networks: list[str] = msgspec.field(default_factory=list)


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One Redis for what server processes share: rate limits, and each tenant's messages
    published to a stream of its own (`waypost:<slug>:messages`)."""

    #: A `redis://`, `rediss://` or `unix://` URL; none: limits are per process and
    #: messages are not sent to Redis.
    url: str | None = None
    #: With `url`: the rate limits are shared by every server process (else each process
    #: enforces them on its own share of the traffic).
    shared_limits: bool = True
    #: With `url`: every tenant's messages are published to its Redis stream.
    publish_messages: bool = True
    #: About how many entries each tenant's stream keeps (older ones are trimmed).
    stream_max_length: int = 100_000
    #: How often an idle publisher looks for new messages.
    stream_poll_seconds: float = 0.25
    #: Longest a rate-limit call to Redis may take (connecting included) before it counts
    #: as a failure: requests never wait longer than this on Redis.
    timeout_seconds: float = 0.25
    #: After failures, how long the rate limits stay per process before Redis is tried again.
    retry_seconds: float = 5.0

    def __repr__(self) -> str:
        return "RedisSettings(...)"  # the URL may hold a password


class DeliverySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Webhook delivery: every subscription's messages POSTed to its URL, signed."""

    #: `waypost serve` delivers in its own process too (false: `waypost worker`s do).
    in_process: bool = True
    #: Attempts in flight at once per process (a quarter of them, at least one, are kept
    #: for retries, so that failing targets never hold back first attempts).
    concurrency: int = 32
    #: Attempts in flight at once per process for one subscription (at most `concurrency`).
    subscription_concurrency: int = 8
    #: How long an attempt may take, all of it (connect, TLS, send, answer).
    timeout_seconds: float = 15.0
    #: Delays before the 2nd, 3rd ... attempt, each varied by +-10%. Environment:
    #: comma-separated.
    retry_schedule_seconds: list[float] = msgspec.field(
        default_factory=lambda: [5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200, 86400]
    )
    #: Networks (CIDRs) webhooks may reach although the address guard refuses them
    #: (loopback, private ...). Environment: comma-separated.
    allowed_networks: list[str] = msgspec.field(default_factory=list)
    #: Refuse `http://` target URLs. Default: in production mode only.
    require_https: bool | None = None
    #: A subscription whose deliveries fail this long without a success is disabled.
    disable_after_hours: float = 120.0
    #: How much of a target's answer is kept with each attempt.
    response_excerpt_bytes: int = 1024
    #: How often idle dispatchers look for new messages (processes on the database that
    #: committed nothing themselves); deliverers look four times less often.
    poll_seconds: float = 0.25
    #: Ordering `artifact`: how long a message waits behind an earlier one of its
    #: artifact that is not delivered yet, before it goes anyway.
    ordering_wait_seconds: float = 600.0

    def https_required(self, mode: str) -> bool:
        return self.require_https if self.require_https is not None else mode == "production"


class GraphQLSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """GraphQL (`/api/v1/graphql`, and `/epr/api/v1/graphql/query` for EPR's clients)."""

    #: Whether the schema may be introspected (GraphiQL's docs and completion use it).
    introspection: bool = True
    #: The longest chain of nested fields a query may have.
    max_depth: int = 10
    #: The most values a query's answer may hold (every field 1, lists multiplied by the
    #: most they can hold, a mutation 100); above it, refused before anything runs.
    max_cost: int = 25_000
    #: The parser stops after this many tokens (a query is refused, not parsed, above it).
    max_tokens: int = 1_000
    #: The longest query text; large values go in variables.
    max_query_bytes: int = 64 * 1024


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `development` applies pending migrations at start; `production` refuses to start.
    mode: Literal["development", "production"] = "development"
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    secrets: SecretsSettings = msgspec.field(default_factory=SecretsSettings)
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    graphql: GraphQLSettings = msgspec.field(default_factory=GraphQLSettings)
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)

    def __post_init__(self) -> None:
        if not 0 < self.http.port < 65536:
            raise SettingsError(f"http.port must be 1..65535, not {self.http.port}")
        if not 1 <= self.http.workers <= MAX_WORKERS:
            raise SettingsError(f"http.workers must be 1..{MAX_WORKERS}, not {self.http.workers}")
        if self.http.max_body_bytes < 1024 or self.http.max_batch_body_bytes < 1024:
            raise SettingsError("http body limits must be at least 1024 bytes")
        if self.http.shutdown_grace_seconds < 0:
            raise SettingsError("http.shutdown_grace_seconds must not be negative")
        self._check_database()
        self._check_tls()
        self._check_proxies()
        self._check_security()
        self._check_secrets()
        self._check_limits()
        self._check_redis()
        self._check_metrics()
        self._check_delivery()
        self._check_graphql()
        self._check_operations()

    def _check_database(self) -> None:
        database = self.database
        scheme = database.url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in {"memory", "sqlite", "postgresql", "postgres"}:
            raise SettingsError(
                "database.url must be memory://, a sqlite:/// URL or a postgresql:// URL"
            )  # the URL itself is not repeated: it may hold a password
        if not 1 <= database.pool_size <= MAX_POOL_SIZE:
            raise SettingsError(f"database.pool_size must be 1..{MAX_POOL_SIZE}")
        if not 0.1 <= database.busy_timeout_seconds <= MAX_BUSY_SECONDS:
            raise SettingsError(f"database.busy_timeout_seconds must be 0.1..{MAX_BUSY_SECONDS}")

    def _check_proxies(self) -> None:
        for network in self.http.trusted_proxies:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise SettingsError(
                    f"http.trusted_proxies: {network!r} is not a network (CIDR)"
                ) from None

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

    def _check_graphql(self) -> None:
        graphql = self.graphql
        for name, value, least in (
            ("max_depth", graphql.max_depth, 2),
            ("max_cost", graphql.max_cost, 10),
            ("max_tokens", graphql.max_tokens, 100),
            ("max_query_bytes", graphql.max_query_bytes, 1024),
        ):
            if value < least:
                raise SettingsError(f"graphql.{name} must be at least {least}")

    def _check_metrics(self) -> None:
        for network in self.metrics.allowed_networks:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise SettingsError(
                    f"metrics.allowed_networks: {network!r} is not a network (CIDR)"
                ) from None

    def _check_delivery(self) -> None:
        d = self.delivery

        def between(name: str, value: float, low: float, high: float) -> None:
            if not (math.isfinite(value) and low <= value <= high):
                raise SettingsError(f"delivery.{name} must be {low:g}..{high:g}, not {value!r}")

        between("concurrency", d.concurrency, 2, 10_000)
        between("subscription_concurrency", d.subscription_concurrency, 1, 10_000)
        between("timeout_seconds", d.timeout_seconds, 0.1, 600)
        between("disable_after_hours", d.disable_after_hours, 0.01, 24 * 366)
        between("response_excerpt_bytes", d.response_excerpt_bytes, 0, 64 * 1024)
        between("poll_seconds", d.poll_seconds, 0.01, 60)
        between("ordering_wait_seconds", d.ordering_wait_seconds, 0, 7 * 86_400)
        schedule = d.retry_schedule_seconds
        if not 1 <= len(schedule) <= MAX_RETRIES:
            raise SettingsError(
                f"delivery.retry_schedule_seconds must list 1 to {MAX_RETRIES} delays"
            )
        for delay in schedule:
            if not (math.isfinite(delay) and 0 < delay <= 30 * 86_400):
                raise SettingsError(
                    "delivery.retry_schedule_seconds: every delay must be more than 0 and at "
                    f"most 30 days, not {delay!r}"
                )
        try:
            parse_networks(d.allowed_networks)
        except ValueError as exc:
            raise SettingsError(f"delivery.allowed_networks: {exc}") from None

    def _check_operations(self) -> None:
        """Logging, tracing, the read replica, the audit log, service identities."""
        problem = check_operations(self)
        if problem is not None:
            raise SettingsError(problem)

    def _check_redis(self) -> None:
        redis = self.redis
        scheme = (redis.url or "redis:").split(":", 1)[0]
        if scheme not in {"redis", "rediss", "unix"}:
            raise SettingsError(
                "redis.url must be a redis://, rediss:// or unix:// URL"
            )  # the URL itself is not repeated: it may hold a password
        if redis.stream_max_length < 1:
            raise SettingsError("redis.stream_max_length must be at least 1")
        if not 0.01 <= redis.stream_poll_seconds <= 60:
            raise SettingsError("redis.stream_poll_seconds must be 0.01..60")
        if not 0.01 <= redis.timeout_seconds <= 10:
            raise SettingsError("redis.timeout_seconds must be 0.01..10")
        if not 0.1 <= redis.retry_seconds <= 3600:
            raise SettingsError("redis.retry_seconds must be 0.1..3600")

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
            ("max_waiters", limits.max_waiters),
            ("tracked_callers", limits.tracked_callers),
        ):
            if count < 1:
                raise SettingsError(f"limits.{name} must be at least 1")

    def _check_secrets(self) -> None:
        secrets = self.secrets
        if secrets.master_key is not None and secrets.master_key_file is not None:
            raise SettingsError("secrets.master_key and secrets.master_key_file exclude each other")
        if secrets.previous_master_key is not None and secrets.previous_master_key_file is not None:
            raise SettingsError(
                "secrets.previous_master_key and secrets.previous_master_key_file exclude "
                "each other"
            )
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


#: Bounds of settings that are counts or durations.
MAX_WORKERS = 64
MAX_POOL_SIZE = 1000
MAX_BUSY_SECONDS = 300.0

_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)
#: Settings that are lists: the environment gives them comma-separated.
_LISTS = (
    ("http", "cors_origins"),
    ("http", "trusted_proxies"),
    ("security", "admin_networks"),
    ("metrics", "allowed_networks"),
    ("delivery", "retry_schedule_seconds"),
    ("delivery", "allowed_networks"),
)
#: Settings that are tables: the environment gives them as `key=value,key=value`.
_TABLES = (("log", "levels"),)


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
    if "redis_streams" in raw:
        raise SettingsError(
            "redis_streams was merged into the redis section: WAYPOST__REDIS__URL, "
            "WAYPOST__REDIS__STREAM_MAX_LENGTH, WAYPOST__REDIS__STREAM_POLL_SECONDS"
        )
    for section, key in _LISTS:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = [part.strip() for part in node[key].split(",") if part.strip()]
    for section, key in _TABLES:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = _table(f"{section}.{key}", node[key])
    try:
        # strict=False lets environment strings become ints, floats and bools.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {_env_path(str(exc))}") from None


def _table(name: str, text: str) -> dict[str, str]:
    """`a=1,b=2` -> {"a": "1", "b": "2"}; a part without `=` stops the start, naming it."""
    table: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, equals, value = part.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise SettingsError(f"{name}: {part!r} is not name=value")
        table[key.strip()] = value.strip()
    return table


def _env_path(message: str) -> str:
    """msgspec says `at $.http.port`; users set WAYPOST__HTTP__PORT."""
    if "`$." in message:
        head, _, rest = message.partition("`$.")
        path, _, tail = rest.partition("`")
        name = PREFIX + path.replace(".", "__").upper()
        return f"{head}{name} ({path}){tail}"
    return message
