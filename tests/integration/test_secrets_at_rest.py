"""Secrets at rest, on real databases: the stored bytes never hold a secret in clear, and a
wrong master key stops everything loudly instead of decrypting into something else."""

from __future__ import annotations

import pathlib

import anyio
import pytest
import sqlalchemy as sa

from adapters.crypto.envelope import (
    EnvelopeCipher,
    SecretContext,
    generate_master_key,
    parse_master_key,
)
from adapters.crypto.jwt import SigningKey
from adapters.sql.engine import create_engine
from core.usecases.secrets import SIGNING_KEY
from entrypoints.bootstrap import StartupError, open_services, start_secrets
from entrypoints.settings import DatabaseSettings, SecretsSettings, Settings

pytestmark = pytest.mark.anyio

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'waypost.db'}"
    fresh: str = request.getfixturevalue("fresh_database")
    return fresh


def configured(url: str, master_key: str) -> Settings:
    return Settings(
        database=DatabaseSettings(url=url), secrets=SecretsSettings(master_key=master_key)
    )


async def stored_envelopes(url: str) -> list[tuple[int, bytes]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT version, envelope FROM secret_versions WHERE name = :n"),
                {"n": SIGNING_KEY},
            )
            return [(row[0], bytes(row[1])) for row in rows]
    finally:
        await engine.dispose()


async def test_the_stored_bytes_never_contain_the_plaintext(
    url: str, tmp_path: pathlib.Path
) -> None:
    master = generate_master_key()
    async with open_services(configured(url, master)) as services:
        await start_secrets(services)
        await services.secrets.maintain(force=True)
        listed = await services.secrets.list()
    assert [(s.version, s.state) for s in listed] == [(1, "verify_only"), (2, "active")]
    envelopes = await stored_envelopes(url)
    assert len(envelopes) == 2
    cipher = EnvelopeCipher([parse_master_key(master)])
    for version, envelope in envelopes:
        plaintext = cipher.decrypt(envelope, SecretContext(None, SIGNING_KEY, version))
        key = SigningKey.from_pkcs8(plaintext)  # it is a private key...
        seed = plaintext[-32:]  # ...whose Ed25519 seed ends the PKCS#8 document
        assert plaintext not in envelope
        assert seed not in envelope
        assert key.kid == listed[version - 1].public_id
        if url.startswith("sqlite"):
            database = await anyio.Path(url.removeprefix("sqlite:///")).read_bytes()
            assert seed not in database
            assert envelope in database  # the check above looks where the secret lives
        assert master.encode() not in envelope


async def test_a_wrong_master_key_fails_loudly(url: str) -> None:
    async with open_services(configured(url, generate_master_key())) as services:
        await start_secrets(services)
    with pytest.raises(StartupError, match="does not open"):
        async with open_services(configured(url, generate_master_key())) as services:
            await start_secrets(services)
