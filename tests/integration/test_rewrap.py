"""`waypost secrets rewrap`: every stored secret sealed again under a new master key, online
(with rotations and logins going on, nothing fails) and resumable; afterwards the new key
alone opens everything and the old one nothing."""

from __future__ import annotations

import pathlib
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from adapters.crypto.envelope import generate_master_key, parse_master_key
from adapters.crypto.identity import EnvelopeSealer
from adapters.sql.migrations import migrate
from core.domain.access import Role
from core.domain.commands import TokenRequest
from core.usecases import RequestContext, Services
from entrypoints.bootstrap import StartupError, open_services, start_secrets
from entrypoints.settings import Settings, load_settings
from tests.e2e.conftest import cli, database_url
from tests.http.conftest import FAST_HASHER

pytestmark = pytest.mark.anyio

CTX = RequestContext(address="127.0.0.1")


def _settings(url: str, key: str, previous: str | None = None) -> Settings:
    environ = {"WAYPOST__DATABASE__URL": url, "WAYPOST__SECRETS__MASTER_KEY": key}
    if previous is not None:
        environ["WAYPOST__SECRETS__PREVIOUS_MASTER_KEY"] = previous
    return load_settings(environ)


async def _sealed_under(services: Services) -> set[str]:
    sealer = EnvelopeSealer([parse_master_key(generate_master_key())])
    store = services.identity_deps.store if services.identity_deps else None
    assert store is not None
    return {
        sealer.sealed_with(record.envelope)
        for tenant_id, name in await store.secrets.names()
        for record in await store.secrets.versions(tenant_id, name)
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_rewrap_with_rotations_and_logins_going_on(
    backend: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    if backend == "postgres":
        request.applymarker(pytest.mark.postgres)
    url = database_url(backend, request, tmp_path)
    old, new = generate_master_key(), generate_master_key()
    await migrate(url)
    async with open_services(_settings(url, old), hasher=FAST_HASHER) as before:
        await start_secrets(before)
        for _ in range(3):
            await before.secrets.maintain(force=True, actor="tests")
        _, key = await before.identity.issue_api_key(
            None, name="ops", role=Role.PLATFORM_ADMIN, created_by="tests"
        )
    new_id = EnvelopeSealer([parse_master_key(new)]).key_id
    old_id = EnvelopeSealer([parse_master_key(old)]).key_id

    failures: list[BaseException] = []
    tokens: list[str] = []
    done = anyio.Event()
    # "the server": restarted with the new key and the previous one (it seals under the new)
    server_settings = _settings(url, new, previous=old)
    async with (
        open_services(server_settings, hasher=FAST_HASHER) as server,
        open_services(server_settings, hasher=FAST_HASHER) as operator,
    ):
        await start_secrets(server)

        async def server_work() -> None:
            rounds = 0
            while not done.is_set() or rounds < 5:
                rounds += 1
                try:
                    if rounds % 3 == 0:
                        await server.secrets.maintain(force=True, actor="tests")
                    answer = await server.identity.grant(
                        TokenRequest(grant_type="api_key", api_key=key), CTX
                    )
                    await server.identity.authenticate(answer.access_token, tenant=None, ctx=CTX)
                    tokens.append(answer.access_token)
                except Exception as exc:
                    failures.append(exc)
                await anyio.lowlevel.checkpoint()

        async def rewrap() -> None:
            try:
                sealer = EnvelopeSealer([parse_master_key(new), parse_master_key(old)])
                result = await operator.secrets.rewrap(sealer)
                # run again (as after an interruption): what is done is skipped
                again = await operator.secrets.rewrap(sealer)
                assert result.sealed >= 4
                assert again.sealed == 0
            finally:
                done.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server_work)
            tasks.start_soon(rewrap)

        assert failures == []
        assert len(tokens) >= 5
        assert await _sealed_under(server) == {new_id}
        assert old_id != new_id

    # afterwards the new key alone opens everything, and every token still verifies
    async with open_services(_settings(url, new), hasher=FAST_HASHER) as after:
        await start_secrets(after)
        for token in tokens[-3:]:
            access = await after.identity.authenticate(token, tenant=None, ctx=CTX)
            assert access.principal.name == "ops"
    # and the old key alone opens nothing
    with pytest.raises(StartupError, match="does not open"):
        async with open_services(_settings(url, old), hasher=FAST_HASHER) as stale:
            await start_secrets(stale)


async def test_the_command_is_resumable_and_doctor_agrees(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'waypost.db'}"
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    old_file.write_text(generate_master_key() + "\n")
    new_file.write_text(cli("secrets", "new-master-key", env={}).stdout)
    env: dict[str, Any] = {
        "WAYPOST__DATABASE__URL": url,
        "WAYPOST__SECRETS__MASTER_KEY_FILE": str(old_file),
    }
    cli("migrate", env=env)
    cli("secrets", "rotate", env=env)
    cli("secrets", "rotate", env=env)
    first = cli("secrets", "rewrap", "--new-master-key-file", str(new_file), env=env)
    assert "2 secret version(s) sealed under master key" in first.stdout, first.stdout
    assert first.stdout.count("jwt-signing-key version") == 2
    # a second run (after an interruption, or by mistake) finds nothing left to do; the
    # settings may name the new key already, with the old one as the previous
    during = {
        **env,
        "WAYPOST__SECRETS__MASTER_KEY_FILE": str(new_file),
        "WAYPOST__SECRETS__PREVIOUS_MASTER_KEY_FILE": str(old_file),
    }
    second = cli("secrets", "rewrap", "--new-master-key-file", str(new_file), env=during)
    assert "0 secret version(s) sealed" in second.stdout
    assert "2 already were" in second.stdout
    doctor = cli("doctor", env=during)
    assert "drop secrets.previous_master_key" in doctor.stdout
    afterwards = {**env, "WAYPOST__SECRETS__MASTER_KEY_FILE": str(new_file)}
    assert "ok   master key: opens the" in cli("doctor", env=afterwards).stdout
    refused = cli("doctor", env=env, check=False)
    assert refused.returncode == 1
    assert "fail master key: does not open jwt-signing-key" in refused.stdout
