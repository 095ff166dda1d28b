"""The operator's commands on a real database, next to a real server: `waypost admin ...` and
`waypost secrets ...`, and the starts that must be refused."""

from __future__ import annotations

import pathlib
import re
import time

import httpx
import pytest

from adapters.crypto.envelope import generate_master_key
from tests.e2e.conftest import BOOTSTRAP_KEY, ServerProcess, cli

pytestmark = pytest.mark.slow

KEY = re.compile(r"wp_[a-z0-9]{8}_[A-Za-z0-9_-]{43,128}\n")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_admin_commands_and_rotation_beside_a_running_server(tmp_path: pathlib.Path) -> None:
    env = {
        "WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 'waypost.db'}",
        "WAYPOST__SECRETS__RELOAD_SECONDS": "1",
    }
    assert cli("admin", "create-tenant", "Acme", env=env).stdout == "acme\n"
    made = cli(
        "admin", "create-api-key", "--tenant", "acme", "--role", "admin", "--name", "ci", env=env
    )
    assert KEY.fullmatch(made.stdout), made.stdout  # only the key: `KEY=$(waypost ...)` works
    tenant_key = made.stdout.strip()
    made = cli("admin", "create-api-key", "--role", "platform_admin", "--name", "ops", env=env)
    platform_key = made.stdout.strip()
    refused = cli(
        "admin",
        "create-api-key",
        "--tenant",
        "nope",
        "--role",
        "admin",
        "--name",
        "x",
        env=env,
        check=False,
    )
    assert refused.returncode == 1
    assert "No tenant nope" in refused.stderr

    server = ServerProcess(env, tmp_path / "server.log")
    try:
        server.wait_ready()
        assert not BOOTSTRAP_KEY.search(server.output())  # a platform key existed already
        assert (
            httpx.get(f"{server.url}/api/v1/events", headers=bearer(tenant_key)).status_code == 200
        )
        assert (
            httpx.get(f"{server.url}/api/v1/tenants", headers=bearer(platform_key)).status_code
            == 200
        )
        grant = {"grant_type": "api_key", "api_key": tenant_key}
        before = httpx.post(f"{server.url}/api/v1/auth/token", data=grant).json()["access_token"]

        listed = cli("secrets", "list", env=env).stdout
        assert re.search(r"jwt-signing-key\s+1\s+active", listed), listed
        rotated = cli("secrets", "rotate", env=env).stdout
        assert re.search(r"jwt-signing-key\s+1\s+verify_only", rotated), rotated
        assert re.search(r"jwt-signing-key\s+2\s+active", rotated), rotated
        assert "BEGIN" not in rotated
        assert "WPSE" not in rotated

        # the server picks the new key up on its own; the old token keeps working
        deadline = time.monotonic() + 20
        while len(httpx.get(f"{server.url}/.well-known/jwks.json").json()["keys"]) < 2:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        assert httpx.get(f"{server.url}/api/v1/events", headers=bearer(before)).status_code == 200
        after = httpx.post(f"{server.url}/api/v1/auth/token", data=grant).json()["access_token"]
        assert httpx.get(f"{server.url}/api/v1/events", headers=bearer(after)).status_code == 200
    finally:
        assert server.stop() == 0, server.output()


def test_starts_that_must_be_refused(tmp_path: pathlib.Path) -> None:
    production = {
        "WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 'prod.db'}",
        "WAYPOST__MODE": "production",
    }
    done = cli("serve", env=production, check=False)
    assert done.returncode == 2
    assert "WAYPOST__SECRETS__MASTER_KEY" in done.stderr
    assert not (tmp_path / "prod.db.master-key").exists()

    first = cli("secrets", "new-master-key", env={}).stdout.strip()
    second = generate_master_key()
    assert len(first) == len(second) == 43
    env = {
        "WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 'w.db'}",
        "WAYPOST__SECRETS__MASTER_KEY": first,
    }
    cli("secrets", "rotate", env=env)  # seals the first signing key under `first`
    wrong = cli("serve", env={**env, "WAYPOST__SECRETS__MASTER_KEY": second}, check=False)
    assert wrong.returncode == 2
    assert "does not open" in wrong.stderr
    assert "Traceback" not in wrong.stderr
