"""`waypost doctor`: 0 on a healthy deployment; 1 with the right line for each broken case."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections import namedtuple
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.crypto.envelope import generate_master_key
from adapters.sql.migrations import migrate
from entrypoints.bootstrap import open_services, start_secrets
from entrypoints.doctor import Environment, Finding, Report, run
from entrypoints.settings import load_settings
from tests.e2e.conftest import free_port
from tests.servers import ReplicaServer

pytestmark = pytest.mark.anyio

Usage = namedtuple("Usage", "total used free")
GIB = 1024**3


class ShiftedClock:
    def __init__(self, by: timedelta = timedelta(0)) -> None:
        self.by = by

    def now(self) -> datetime:
        return datetime.now(UTC) + self.by


def _env(
    clock: timedelta = timedelta(0), mounts: str | None = None, free: int = 50 * GIB, **_: Any
) -> Environment:
    env = Environment(clock=ShiftedClock(clock), disk_usage=lambda _: Usage(100 * GIB, 0, free))
    if mounts is not None:
        path = pathlib.Path(mounts)
        env.mounts = path
    return env


async def _deploy(environ: Mapping[str, str]) -> None:
    """A deployment as its first start leaves it: migrated, a master key, a signing key."""
    settings = load_settings(environ)
    await migrate(settings.database.url)
    async with open_services(settings) as services:
        await start_secrets(services)


def _line(report: Report, check: str) -> Finding:
    found = [f for f in report.findings if f.check == check]
    assert found, f"no {check} line in {report.findings}"
    worst = [f for f in found if f.status != "ok"]
    return worst[0] if worst else found[0]


def _failed(report: Report, check: str, *words: str) -> Finding:
    assert not report.ok
    finding = _line(report, check)
    assert finding.status == "fail", report.findings
    for word in words:
        assert word in finding.message, finding
    return finding


@pytest.fixture
def sqlite_env(tmp_path: pathlib.Path) -> dict[str, str]:
    return {"WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 'waypost.db'}"}


@pytest.fixture
async def healthy(sqlite_env: dict[str, str]) -> dict[str, str]:
    await _deploy(sqlite_env)
    return sqlite_env


async def test_a_healthy_sqlite_deployment(healthy: dict[str, str]) -> None:
    report = await run(healthy, _env())
    assert report.ok, report.findings
    assert {f.check for f in report.findings} >= {
        "settings",
        "database",
        "migrations",
        "master key",
        "signing keys",
        "disk",
    }
    assert all(f.status == "ok" for f in report.findings), report.findings
    assert "SQLite 3." in _line(report, "database").message


async def test_the_command_prints_one_line_each_and_exits_by_the_worst(
    healthy: dict[str, str], sqlite_env: dict[str, str]
) -> None:
    done = await _cli(healthy)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ok   settings: valid (development mode)"
    assert all(line.split()[0] in {"ok", "warn"} for line in lines), lines
    as_json = await _cli(healthy, "--json")
    document = msgspec.json.decode(as_json.stdout)
    assert document["ok"] is True
    assert {"check", "status", "message"} == set(document["findings"][0])
    broken = await _cli({**sqlite_env, "WAYPOST__HTTP__PORT": "0"})
    assert broken.returncode == 1
    assert broken.stdout.startswith("fail settings: http.port must be 1..65535")


async def _cli(environ: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = await anyio.run_process(
        [sys.executable, "-m", "entrypoints.cli", "doctor", *args],
        env={**os.environ, **environ},
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


async def test_invalid_settings(sqlite_env: dict[str, str]) -> None:
    report = await run({**sqlite_env, "WAYPOST__LIMITS__BURST": "0"}, _env())
    _failed(report, "settings", "limits.burst")


async def test_no_database_file(sqlite_env: dict[str, str]) -> None:
    report = await run(sqlite_env, _env())
    _failed(report, "database", "no SQLite database", "waypost migrate")


#: How many migrations there are (each branch may add its own).
MIGRATIONS = len(
    list(
        (pathlib.Path(__file__).resolve().parents[2] / "adapters/sql/migrations/versions").glob(
            "[0-9][0-9][0-9][0-9]_*.py"
        )
    )
)


async def test_pending_migrations(sqlite_env: dict[str, str], tmp_path: pathlib.Path) -> None:
    (tmp_path / "waypost.db").write_bytes(b"")  # a database nobody migrated
    report = await run(sqlite_env, _env())
    _failed(report, "migrations", f"{MIGRATIONS} pending", "waypost migrate")


async def test_a_wrong_master_key(healthy: dict[str, str]) -> None:
    report = await run({**healthy, "WAYPOST__SECRETS__MASTER_KEY": generate_master_key()}, _env())
    _failed(report, "master key", "does not open jwt-signing-key version 1", "was not given")


async def test_production_without_a_master_key(healthy: dict[str, str]) -> None:
    report = await run({**healthy, "WAYPOST__MODE": "production"}, _env())
    _failed(report, "master key", "none given", "WAYPOST__SECRETS__MASTER_KEY")


async def test_an_overdue_signing_key(healthy: dict[str, str]) -> None:
    report = await run(healthy, _env(clock=timedelta(days=31, hours=2)))
    _failed(report, "signing keys", "31 days old", "waypost secrets rotate")
    assert _line(await run(healthy, _env(clock=timedelta(days=29))), "signing keys").status == "ok"


def _nfs_mounts(folder: pathlib.Path) -> pathlib.Path:
    """A mounts table in which `folder` is on NFS."""
    mounts = folder / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"server:/export {folder.resolve()} nfs4 rw,relatime 0 0\n"
        "tmpfs /tmp/other tmpfs rw 0 0\n"
    )
    return mounts


async def test_sqlite_on_a_network_file_system(
    healthy: dict[str, str], tmp_path: pathlib.Path
) -> None:
    mounts = _nfs_mounts(tmp_path)
    report = await run(healthy, _env(mounts=str(mounts)))
    _failed(report, "disk", "network file system (nfs4)")


async def test_sqlite_without_free_space(healthy: dict[str, str]) -> None:
    _failed(await run(healthy, _env(free=50 * 1024 * 1024)), "disk", "only 50.0 MiB free")
    low = await run(healthy, _env(free=500 * 1024 * 1024))
    assert low.ok
    assert _line(low, "disk").status == "warn"


async def test_redis_unreachable(healthy: dict[str, str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    report = await run({**healthy, "WAYPOST__REDIS__URL": url}, _env())
    _failed(report, "redis", "redis.url not reachable")
    # The rate limits need it too: checked whatever it is used for.
    quiet = {"WAYPOST__REDIS__URL": url, "WAYPOST__REDIS__PUBLISH_MESSAGES": "false"}
    _failed(await run({**healthy, **quiet}, _env()), "redis", "not reachable")


@pytest.mark.redis
async def test_redis_reachable(healthy: dict[str, str], redis_url: str) -> None:
    report = await run({**healthy, "WAYPOST__REDIS__URL": redis_url}, _env())
    assert report.ok, report.findings
    assert _line(report, "redis").message.startswith("Redis ")


# --- TLS -----------------------------------------------------------------------------------


def _certificate(
    folder: pathlib.Path, days: float, *, name: str = "server"
) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _tls(cert: pathlib.Path, key: pathlib.Path) -> dict[str, str]:
    return {"WAYPOST__HTTP__TLS_CERT_FILE": str(cert), "WAYPOST__HTTP__TLS_KEY_FILE": str(key)}


async def test_tls_files(healthy: dict[str, str], tmp_path: pathlib.Path) -> None:
    cert, key = _certificate(tmp_path, days=90)
    good = await run({**healthy, **_tls(cert, key)}, _env())
    assert good.ok, good.findings
    assert "valid until" in _line(good, "tls").message

    soon, soon_key = _certificate(tmp_path, days=10, name="soon")
    _failed(await run({**healthy, **_tls(soon, soon_key)}, _env()), "tls", "expires on", "renew")

    _, other_key = _certificate(tmp_path, days=90, name="other")
    _failed(await run({**healthy, **_tls(cert, other_key)}, _env()), "tls", "is not the key of")

    missing = tmp_path / "missing.pem"
    _failed(await run({**healthy, **_tls(missing, key)}, _env()), "tls", "http.tls_cert_file")

    ca = {"WAYPOST__HTTP__TLS_CLIENT_CA_FILE": str(tmp_path / "no-ca.pem")}
    _failed(await run({**healthy, **_tls(cert, key), **ca}, _env()), "tls", "tls_client_ca_file")


async def test_production_warnings(healthy: dict[str, str]) -> None:
    report = await run(
        {
            **healthy,
            "WAYPOST__MODE": "production",
            "WAYPOST__SECRETS__MASTER_KEY_FILE": healthy["WAYPOST__DATABASE__URL"][10:]
            + ".master-key",
            "WAYPOST__HTTP__CORS_ORIGINS": "http://console.example.com",
        },
        _env(),
    )
    assert report.ok, report.findings  # warnings only
    warned = [f.message for f in report.findings if f.status == "warn"]
    assert any(m.startswith("HTTP without TLS") for m in warned), warned
    assert any("plain-http origins: http://console.example.com" in m for m in warned), warned
    assert any("metrics are open to everyone" in m for m in warned), warned


# --- PostgreSQL --------------------------------------------------------------------------------

MASTER = {"WAYPOST__SECRETS__MASTER_KEY": "ZTJlLXRlc3RzLW9ubHktbWFzdGVyLWtleS0wMDAwMDAwMDE"}


@pytest.mark.postgres
async def test_a_healthy_postgres_deployment_and_its_clock(fresh_database: str) -> None:
    environ = {"WAYPOST__DATABASE__URL": fresh_database, **MASTER}
    await _deploy(environ)
    report = await run(environ, _env())
    assert report.ok, report.findings
    assert _line(report, "database").message.startswith("PostgreSQL 15")
    assert _line(report, "clock").status == "ok"
    skewed = await run(environ, _env(clock=timedelta(seconds=3)))
    _failed(skewed, "clock", "ahead of the database's", "NTP")


@pytest.mark.postgres
async def test_the_urls_libpq_options_are_understood(fresh_database: str) -> None:
    """The doctor connects as the server does: `connect_timeout` and the like are the
    client's options, not settings sent to PostgreSQL."""
    url = f"{fresh_database}?application_name=waypost&connect_timeout=5&sslmode=disable"
    environ = {"WAYPOST__DATABASE__URL": url, **MASTER}
    await _deploy(environ)
    report = await run(environ, _env())
    assert report.ok, report.findings
    assert _line(report, "database").message.startswith("PostgreSQL 15")


async def test_an_unreadable_password_file(tmp_path: pathlib.Path) -> None:
    """The server's URL is the one checked: with `database.password_file`'s password."""
    environ = {
        "WAYPOST__DATABASE__URL": f"postgresql://waypost@127.0.0.1:{free_port()}/waypost",
        "WAYPOST__DATABASE__PASSWORD_FILE": str(tmp_path / "missing"),
        **MASTER,
    }
    _failed(await run(environ, _env()), "database", "database.password_file", "cannot read")


@pytest.mark.postgres
async def test_postgres_unreachable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/waypost"
    report = await run({"WAYPOST__DATABASE__URL": url, **MASTER}, _env())
    _failed(report, "database", "PostgreSQL not reachable")


@pytest.mark.postgres
async def test_the_read_replica(fresh_database: str, postgres_replica: ReplicaServer) -> None:
    environ = {
        "WAYPOST__DATABASE__URL": fresh_database,
        "WAYPOST__DATABASE__READ_URL": postgres_replica.url(fresh_database),
        **MASTER,
    }
    await _deploy(environ)
    await anyio.to_thread.run_sync(postgres_replica.caught_up)
    report = await run(environ, _env())
    assert report.ok, report.findings
    assert _line(report, "replica").message == "a streaming standby, reachable"
    primary = {**environ, "WAYPOST__DATABASE__READ_URL": fresh_database}
    _failed(await run(primary, _env()), "replica", "is not a standby")
    gone = f"postgresql://postgres@127.0.0.1:{free_port()}/waypost"
    _failed(
        await run({**environ, "WAYPOST__DATABASE__READ_URL": gone}, _env()),
        "replica",
        "not reachable",
    )
