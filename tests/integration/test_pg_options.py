"""libpq's URL options on PostgreSQL URLs: mapped to asyncpg's arguments, and honoured by a
real server (application_name, options, sslmode, connect_timeout)."""

from __future__ import annotations

import pathlib
import ssl
import time

import pytest
import sqlalchemy as sa

from adapters.sql.engine import (
    PG_CONNECT_TIMEOUT,
    UnsupportedDatabase,
    create_engine,
    pg_connect_args,
)
from adapters.sql.store import SqlStore
from core.ports import Unavailable

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("query", "args"),
    [
        ({}, {"timeout": PG_CONNECT_TIMEOUT}),
        ({"sslmode": "disable"}, {"timeout": PG_CONNECT_TIMEOUT, "ssl": False}),
        ({"sslmode": "require"}, {"timeout": PG_CONNECT_TIMEOUT, "ssl": "require"}),
        ({"sslmode": "verify-full"}, {"timeout": PG_CONNECT_TIMEOUT, "ssl": "verify-full"}),
        (
            {"application_name": "waypost-api"},
            {"timeout": PG_CONNECT_TIMEOUT, "server_settings": {"application_name": "waypost-api"}},
        ),
        ({"connect_timeout": "7"}, {"timeout": 7.0}),
        ({"connect_timeout": "1"}, {"timeout": 2.0}),  # libpq: under 2 means 2
        ({"connect_timeout": "0"}, {"timeout": 86_400.0}),  # libpq: wait (about) forever
        (
            {"options": "-c statement_timeout=5000 -csearch_path=public --lock-timeout=2s"},
            {
                "timeout": PG_CONNECT_TIMEOUT,
                "server_settings": {
                    "statement_timeout": "5000",
                    "search_path": "public",
                    "lock_timeout": "2s",
                },
            },
        ),
    ],
)
def test_libpq_options_become_asyncpg_arguments(
    query: dict[str, str], args: dict[str, object]
) -> None:
    assert pg_connect_args(query) == args


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"sslmode": "sometimes"}, "sslmode must be one of"),
        ({"connect_timeout": "soon"}, "connect_timeout"),
        ({"connect_timeout": "-1"}, "connect_timeout"),
        ({"options": "statement_timeout=5"}, "options"),
        ({"options": "-c statement_timeout"}, "options"),
        ({"sslcert": "/x"}, "certificate files need sslmode"),
        ({"sslmode": "verify-full", "sslrootcert": "/no/such/root.crt"}, "cannot load"),
        ({"gssencmode": "disable"}, "unsupported option(s) gssencmode"),
        ({"application_name": ("a", "b")}, "more than once"),
    ],
)
def test_a_bad_option_is_named(query: dict[str, str | tuple[str, ...]], message: str) -> None:
    with pytest.raises(UnsupportedDatabase, match=message.replace("(", r"\(").replace(")", r"\)")):
        pg_connect_args(query)


def test_certificate_files_make_a_context_that_checks_what_the_mode_says(
    tmp_path: pathlib.Path,
) -> None:
    root = tmp_path / "root.crt"
    root.write_text(_self_signed())
    full = pg_connect_args({"sslmode": "verify-full", "sslrootcert": str(root)})["ssl"]
    assert isinstance(full, ssl.SSLContext)
    assert (full.check_hostname, full.verify_mode) == (True, ssl.CERT_REQUIRED)
    ca = pg_connect_args({"sslmode": "verify-ca", "sslrootcert": str(root)})["ssl"]
    assert (ca.check_hostname, ca.verify_mode) == (False, ssl.CERT_REQUIRED)
    # libpq: `require` with a root certificate checks the chain (as verify-ca)
    required = pg_connect_args({"sslmode": "require", "sslrootcert": str(root)})["ssl"]
    assert (required.check_hostname, required.verify_mode) == (False, ssl.CERT_REQUIRED)


def _self_signed() -> str:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.postgres
async def test_a_real_server_sees_the_options(fresh_database: str) -> None:
    url = (
        f"{fresh_database}?sslmode=disable&application_name=waypost-test&connect_timeout=5"
        "&options=-c%20statement_timeout%3D4321"
    )
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            name = (await conn.execute(sa.text("SHOW application_name"))).scalar()
            timeout = (await conn.execute(sa.text("SHOW statement_timeout"))).scalar()
    finally:
        await engine.dispose()
    assert (name, timeout) == ("waypost-test", "4321ms")
    # The store's own connections (asyncpg, drawn from the engine's pool) too.
    store = await SqlStore.connect(url, pool_size=1)
    await store.close()


@pytest.mark.postgres
async def test_sslmode_require_on_a_server_without_tls_is_unavailable_at_once(
    fresh_database: str,
) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable) as refused:
        await SqlStore.connect(f"{fresh_database}?sslmode=require")
    assert time.monotonic() - started < 5
    assert "at 127.0.0.1:" in refused.value.what
