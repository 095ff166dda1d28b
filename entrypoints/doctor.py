"""`waypost doctor`: check a deployment and say what is wrong, one line each.

Each check gives one or more findings: `ok`, `warn` (works, but look at it) or `fail`
(something will not work). The command exits 1 when any check fails, else 0; `--json`
prints `{"ok": bool, "findings": [{"check", "status", "message"}]}` instead of lines.

What is checked, in order (a check that needs what an earlier one found broken says so):

- settings: they load and are valid (the environment and `WAYPOST__CONFIG`);
- database: reachable, its version, and the migrations applied up to the head; the read
  replica too, when configured (reachable, a standby, its lag);
- clock: this host's clock against the database's (PostgreSQL), under `MAX_SKEW`;
- master key: given (or development's own file), and it opens every stored secret that
  may still be opened; nothing is decrypted into anything else;
- signing keys: an active one, not older than its rotation plus `ROTATION_SLACK`;
- redis: reachable, when `redis.url` is set (shared rate limits, message streams);
- disk: the SQLite file on a local file system, with free space;
- tls: the certificate, key and client CA files readable and matching, and the
  certificate valid for `CERT_DAYS` more days;
- production: what production mode should not have (HTTP without TLS, plain-http CORS
  origins, metrics readable by anyone).

Nothing is changed: no migration, no key file made, no secret rotated, nothing audited.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

import anyio
import asyncpg
import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.engine import make_url

from adapters.crypto.envelope import EnvelopeCipher, EnvelopeError, SecretContext, parse_master_key
from adapters.sql.engine import split_pg_options
from adapters.sql.identity import SqlIdentity
from adapters.sql.migrations import pending
from adapters.system import SystemClock
from core.domain.rotation import VersionState, signing
from core.ports import Clock
from entrypoints.bootstrap import (
    MASTER_KEY_SUFFIX,
    StartupError,
    database_kind,
    database_url,
    with_password,
)
from entrypoints.settings import Settings, SettingsError, load_settings

__all__ = ["Finding", "Report", "main", "run"]

Status = Literal["ok", "warn", "fail"]
#: Largest tolerated difference between this host's clock and the database's.
MAX_SKEW: Final = timedelta(seconds=1)
#: How long after its due time a rotation may still be pending (a server applies the
#: policy every `secrets.reload_seconds`; one hour covers restarts).
ROTATION_SLACK: Final = timedelta(hours=1)
#: A certificate that expires within this many days fails.
CERT_DAYS: Final = 14
#: Free space on the SQLite file's file system: below FAIL fails, below WARN warns.
FREE_FAIL_BYTES: Final = 100 * 1024 * 1024
FREE_WARN_BYTES: Final = 1024 * 1024 * 1024
FREE_WARN_SHARE: Final = 0.05
#: File systems on which SQLite's locking is not safe (several hosts, or lying locks).
NETWORK_FILE_SYSTEMS: Final = frozenset(
    {"nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
     "lustre", "fuse.sshfs", "sshfs", "davfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone"}
)  # fmt: skip
TIMEOUT: Final = 5.0


class Finding(msgspec.Struct, frozen=True):
    check: str
    status: Status
    message: str

    def line(self) -> str:
        return f"{self.status:<4} {self.check}: {self.message}"


class Report(msgspec.Struct, frozen=True):
    ok: bool
    findings: list[Finding]


@dataclass
class Environment:
    """What the checks read from the host; tests replace parts of it."""

    clock: Clock = field(default_factory=SystemClock)
    mounts: pathlib.Path = pathlib.Path("/proc/self/mounts")
    disk_usage: Callable[[str], Any] = shutil.disk_usage


class _Doctor:
    def __init__(self, settings: Settings, env: Environment) -> None:
        self.settings = settings
        self.env = env
        self.findings: list[Finding] = []
        self.database_ok = False
        #: `database.url` with `database.password_file`'s password, as the server uses it.
        self.url = settings.database.url
        self.url_problem: str | None = None
        try:
            self.url = database_url(settings)
        except StartupError as exc:
            self.url_problem = str(exc)

    def add(self, check: str, status: Status, message: str) -> None:
        self.findings.append(Finding(check, status, message))

    # --- the database ------------------------------------------------------------------

    async def database(self) -> None:
        url = self.url
        if self.url_problem is not None:
            self.add("database", "fail", self.url_problem)
            return
        kind = database_kind(url)
        if kind == "memory":
            self.add("database", "warn", "memory://: nothing is kept when the server stops")
            return
        if kind == "sqlite":
            path = _sqlite_path(url)
            if not path.exists():
                self.add(
                    "database", "fail", f"no SQLite database at {path}: `waypost migrate` makes it"
                )
                return
            self.add("database", "ok", f"SQLite {sqlite3.sqlite_version} at {path}")
        else:
            try:
                version = await _pg_value(url, "SHOW server_version")
            except Exception as exc:
                self.add("database", "fail", f"PostgreSQL not reachable: {_reason(exc)}")
                return
            self.add("database", "ok", f"PostgreSQL {version} reachable")
        try:
            with anyio.fail_after(TIMEOUT):
                waiting = await pending(url)
        except Exception as exc:
            self.add("migrations", "fail", f"cannot read the schema's revision: {_reason(exc)}")
            return
        if waiting:
            self.add(
                "migrations",
                "fail",
                f"{len(waiting)} pending ({', '.join(waiting)}): run `waypost migrate`",
            )
            return
        self.add("migrations", "ok", "the schema is at the latest revision")
        self.database_ok = True

    async def replica(self) -> None:
        read_url = self.settings.database.read_url
        if read_url is None:
            return
        try:
            recovering, lag = await _pg_row(
                with_password(self.settings, read_url),
                "SELECT pg_is_in_recovery(), "
                "EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())",
            )
        except StartupError as exc:
            self.add("replica", "fail", str(exc))
            return
        except Exception as exc:
            self.add("replica", "fail", f"database.read_url not reachable: {_reason(exc)}")
            return
        if not recovering:
            self.add("replica", "fail", "database.read_url is not a standby (it is a primary)")
            return
        limit = self.settings.database.read_max_lag_seconds
        if lag is not None and float(lag) > limit:
            self.add(
                "replica",
                "warn",
                f"a standby {float(lag):.1f} s behind (over read_max_lag_seconds {limit:g}: "
                "reads go to the primary), or the primary has been idle",
            )
            return
        self.add("replica", "ok", "a streaming standby, reachable")

    async def clock(self) -> None:
        url = self.url
        if database_kind(url) != "postgresql" or not self.database_ok:
            return
        before = time.monotonic()
        local = self.env.clock.now()
        try:
            remote = await _pg_value(url, "SELECT now()")
        except Exception as exc:  # pragma: no cover - it answered a moment ago
            self.add("clock", "fail", f"cannot read the database's clock: {_reason(exc)}")
            return
        trip = timedelta(seconds=time.monotonic() - before)
        skew = remote - (local + trip / 2)
        seconds = abs(skew.total_seconds())
        if abs(skew) >= MAX_SKEW:
            side = "behind" if skew > timedelta(0) else "ahead of"
            self.add(
                "clock",
                "fail",
                f"this host's clock is {seconds:.2f} s {side} the database's: synchronize "
                "both (NTP); token and retention times depend on it",
            )
        else:
            self.add("clock", "ok", f"within {seconds * 1000:.0f} ms of the database's")

    # --- secrets -------------------------------------------------------------------------

    def master_keys(self) -> list[bytes] | None:
        """The master key(s) the settings give (the previous one last), or development's
        own file; None: none."""
        keys = self._master_key()
        secrets = self.settings.secrets
        previous = secrets.previous_master_key
        if previous is None and secrets.previous_master_key_file is not None:
            previous = pathlib.Path(secrets.previous_master_key_file).read_text("ascii")
        if keys is not None and previous is not None:
            keys.append(parse_master_key(previous))
        return keys

    def _master_key(self) -> list[bytes] | None:
        secrets = self.settings.secrets
        if secrets.master_key is not None:
            return [parse_master_key(secrets.master_key)]
        if secrets.master_key_file is not None:
            return [parse_master_key(pathlib.Path(secrets.master_key_file).read_text("ascii"))]
        if (
            self.settings.mode == "development"
            and database_kind(self.settings.database.url) == "sqlite"
        ):
            path = _sqlite_path(self.settings.database.url)
            beside = path.with_name(path.name + MASTER_KEY_SUFFIX)
            if beside.exists():
                return [parse_master_key(beside.read_text("ascii"))]
        return None

    async def secrets(self) -> None:
        try:
            keys = self.master_keys()
        except (OSError, ValueError) as exc:
            self.add("master key", "fail", f"cannot be read: {exc}")
            return
        kind = database_kind(self.settings.database.url)
        if keys is None and (self.settings.mode == "production" or kind == "postgresql"):
            self.add(
                "master key",
                "fail",
                "none given: set WAYPOST__SECRETS__MASTER_KEY or WAYPOST__SECRETS__MASTER_KEY_FILE",
            )
            return
        if kind == "memory" or not self.database_ok:
            if keys is not None:
                self.add("master key", "ok", "given")
            return
        identity = await SqlIdentity.connect(self.url)
        try:
            records = [
                record
                for tenant_id, name in await identity.secrets.names()
                for record in await identity.secrets.versions(tenant_id, name)
            ]
        finally:
            await identity.close()
        live = [r for r in records if r.version.state != VersionState.RETIRED]
        if keys is None:
            if live:
                self.add("master key", "fail", "none given, but secrets are stored sealed")
            else:
                self.add(
                    "master key", "ok", "none yet: the first start makes one beside the database"
                )
            return
        cipher = EnvelopeCipher(keys)
        for record in live:
            try:
                cipher.decrypt(
                    record.envelope,
                    SecretContext(record.tenant_id, record.name, record.version.version),
                )
            except EnvelopeError as exc:
                self.add(
                    "master key",
                    "fail",
                    f"does not open {record.name} version {record.version.version}: {exc}",
                )
                return
        self.add("master key", "ok", f"opens the {len(live)} stored secret(s) in use")
        if len(keys) > 1:
            self.rotation_of_master_key(cipher, records)
        self.signing_keys([r.version for r in records])

    def rotation_of_master_key(self, cipher: EnvelopeCipher, records: Sequence[Any]) -> None:
        """A previous master key is configured: is the rewrap done?"""
        current = cipher.master_key_id
        behind = [r for r in records if cipher.sealed_with(r.envelope) != current]
        if behind:
            self.add(
                "master key",
                "warn",
                f"{len(behind)} secret version(s) still sealed under the previous master "
                "key: run `waypost secrets rewrap --new-master-key-file ...`",
            )
        else:
            self.add(
                "master key",
                "warn",
                "every secret is sealed under the new master key: drop "
                "secrets.previous_master_key[_file]",
            )

    def signing_keys(self, versions: Sequence[Any]) -> None:
        from entrypoints.bootstrap import rotation_policy  # noqa: PLC0415 - one policy

        active = signing(versions)
        if active is None or active.activated_at is None:
            self.add("signing keys", "warn", "none yet: the first server start makes one")
            return
        policy = rotation_policy(self.settings)
        now = self.env.clock.now()
        due = active.activated_at + policy.rotate_every
        age = now - active.activated_at
        if now > due + ROTATION_SLACK:
            self.add(
                "signing keys",
                "fail",
                f"the active key is {_days(age)} old; its rotation was due "
                f"{due:%Y-%m-%d %H:%M} UTC: no server applied the policy (is one running?); "
                "`waypost secrets rotate` rotates now",
            )
        else:
            self.add(
                "signing keys",
                "ok",
                f"the active key is {_days(age)} old, rotates by {due:%Y-%m-%d}",
            )

    # --- the rest --------------------------------------------------------------------------

    async def redis(self) -> None:
        url = self.settings.redis.url
        if url is None:
            return
        from redis.asyncio import Redis  # noqa: PLC0415 - only when configured

        client = Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        try:
            info = await client.info("server")
        except Exception as exc:
            self.add("redis", "fail", f"redis.url not reachable: {_reason(exc)}")
            return
        finally:
            await client.aclose()
        self.add("redis", "ok", f"Redis {info.get('redis_version', '?')} reachable")

    def disk(self) -> None:
        url = self.settings.database.url
        if database_kind(url) != "sqlite":
            return
        path = _sqlite_path(url).resolve()
        folder = path.parent
        kind = _file_system(self.env.mounts, folder)
        if kind in NETWORK_FILE_SYSTEMS:
            self.add(
                "disk",
                "fail",
                f"{path} is on a network file system ({kind}): SQLite's locks are not safe "
                "there; put it on a local disk, or use PostgreSQL",
            )
            return
        try:
            usage = self.env.disk_usage(str(folder))
        except OSError as exc:
            self.add("disk", "fail", f"cannot read the free space of {folder}: {exc.strerror}")
            return
        free, total = int(usage.free), int(usage.total)
        text = f"{_size(free)} free of {_size(total)} on {folder} ({kind or 'local'})"
        if free < FREE_FAIL_BYTES:
            self.add("disk", "fail", f"only {text}: writes will fail soon")
        elif free < FREE_WARN_BYTES or (total and free / total < FREE_WARN_SHARE):
            self.add("disk", "warn", f"only {text}")
        else:
            self.add("disk", "ok", text)

    def tls(self) -> None:
        http = self.settings.http
        if http.tls_cert_file is None:
            return
        assert http.tls_key_file is not None  # the settings check they go together
        try:
            chain = x509.load_pem_x509_certificates(pathlib.Path(http.tls_cert_file).read_bytes())
        except (OSError, ValueError) as exc:
            self.add("tls", "fail", f"http.tls_cert_file {http.tls_cert_file}: {_reason(exc)}")
            return
        try:
            key = serialization.load_pem_private_key(
                pathlib.Path(http.tls_key_file).read_bytes(), password=None
            )
        except (OSError, ValueError, TypeError) as exc:
            self.add("tls", "fail", f"http.tls_key_file {http.tls_key_file}: {_reason(exc)}")
            return
        leaf = chain[0]
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            self.add("tls", "fail", "http.tls_key_file is not the key of http.tls_cert_file")
            return
        now = self.env.clock.now()
        left = leaf.not_valid_after_utc - now
        until = f"{leaf.not_valid_after_utc:%Y-%m-%d}"
        if left <= timedelta(0):
            self.add("tls", "fail", f"the server certificate expired on {until}")
        elif left < timedelta(days=CERT_DAYS):
            self.add(
                "tls",
                "fail",
                f"the server certificate expires on {until}, in {_days(left)}: renew it",
            )
        else:
            self.add("tls", "ok", f"the server certificate is valid until {until}")
        if http.tls_client_ca_file is not None:
            try:
                x509.load_pem_x509_certificates(pathlib.Path(http.tls_client_ca_file).read_bytes())
            except (OSError, ValueError) as exc:
                self.add(
                    "tls",
                    "fail",
                    f"http.tls_client_ca_file {http.tls_client_ca_file}: {_reason(exc)}",
                )

    def production(self) -> None:
        settings = self.settings
        if settings.mode != "production":
            return
        http = settings.http
        if http.tls_cert_file is None:
            self.add(
                "production",
                "warn",
                "HTTP without TLS: credentials cross the network in clear unless a proxy in "
                "front terminates TLS",
            )
        plain = [o for o in http.cors_origins if o.startswith("http://")]
        if plain:
            self.add("production", "warn", f"CORS allows plain-http origins: {', '.join(plain)}")
        if settings.metrics.enabled and not settings.metrics.allowed_networks:
            self.add(
                "production",
                "warn",
                "the metrics are open to everyone: set metrics.allowed_networks",
            )


async def run(environ: Mapping[str, str], env: Environment | None = None) -> Report:
    """Every check, on the settings of `environ`."""
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        finding = Finding("settings", "fail", str(exc))
        return Report(ok=False, findings=[finding])
    doctor = _Doctor(settings, env or Environment())
    doctor.add("settings", "ok", f"valid ({settings.mode} mode)")
    steps: list[Callable[[], Awaitable[None]]] = [
        doctor.database,
        doctor.replica,
        doctor.clock,
        doctor.secrets,
        doctor.redis,
    ]
    for step in steps:
        await step()
    doctor.disk()
    doctor.tls()
    doctor.production()
    return Report(ok=all(f.status != "fail" for f in doctor.findings), findings=doctor.findings)


def main(environ: Mapping[str, str], as_json: bool) -> int:
    report = anyio.run(run, environ)
    if as_json:
        print(msgspec.json.encode(report).decode())
    else:
        for finding in report.findings:
            print(finding.line())
    return 0 if report.ok else 1


# --- helpers -----------------------------------------------------------------------------------


def _sqlite_path(url: str) -> pathlib.Path:
    database = make_url(url).database
    assert database, "a SQLite URL names a file (settings check it)"
    return pathlib.Path(database)


async def _pg_row(url: str, query: str) -> tuple[Any, ...]:
    """One row, on a connection made as the server makes its own: the URL's libpq options
    (`sslmode`, `connect_timeout`, ...) mapped to asyncpg's arguments, not sent to the
    server as settings."""
    bare, args = split_pg_options(make_url(url))
    args["timeout"] = min(args["timeout"], TIMEOUT)
    bare = bare.set(query={k: v for k, v in bare.query.items() if k in ("host", "port")})
    dsn = bare.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, **args)
    try:
        row = await conn.fetchrow(query, timeout=TIMEOUT)
    finally:
        await conn.close()
    assert row is not None
    return tuple(row)


async def _pg_value(url: str, query: str) -> Any:
    return (await _pg_row(url, query))[0]


def _file_system(mounts: pathlib.Path, folder: pathlib.Path) -> str | None:
    """The type of the file system `folder` is on, from a mounts table (longest mount point)."""
    best, kind = -1, None
    with contextlib.suppress(OSError):
        for line in mounts.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            point = parts[1].replace("\\040", " ")
            inside = folder == pathlib.Path(point) or pathlib.Path(point) in folder.parents
            if inside and len(point) > best:
                best, kind = len(point), parts[2]
    return kind


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86_400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
