"""The operator's command line: --version, --port and --workers checked, `admin` refusing
memory:// and listing and revoking, one-line errors for a database that cannot be used."""

from __future__ import annotations

import pathlib
import re

import pytest

from adapters.crypto.envelope import generate_master_key
from entrypoints import cli, logs
from entrypoints.bootstrap import StartupError, database_url
from entrypoints.settings import DatabaseSettings, Settings

MASTER_KEY = generate_master_key()


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, **env: str
) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "--version")
    assert code == 0
    assert re.fullmatch(r"waypost \d+\.\d+\.\d+\S*\n", out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "0"], "--port must be 1..65535, not 0"),
        (["serve", "--port", "99999"], "--port must be 1..65535, not 99999"),
        (["serve", "--port", "http"], "--port must be a number"),
        (["serve", "--workers", "0"], "--workers must be 1..64, not 0"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err


def test_admin_refuses_memory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        monkeypatch, capsys, "admin", "create-tenant", "acme", WAYPOST__DATABASE__URL="memory://"
    )
    assert (code, out) == (2, "")
    assert "memory://" in err
    assert "nothing would be kept" in err


def test_memory_is_served_by_one_process_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several processes on memory:// would be several registries, each with its own first
    administrator."""
    code, out, err = run(
        monkeypatch, capsys, "serve", "--workers", "2", WAYPOST__DATABASE__URL="memory://"
    )
    assert (code, out) == (2, "")
    assert "memory://" in err
    assert "one worker" in err


@pytest.mark.parametrize("command", [["migrate"], ["admin", "list-tenants"], ["serve"]])
def test_an_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *_, **__: None)
    code, _, err = run(
        monkeypatch,
        capsys,
        *command,
        WAYPOST__DATABASE__URL="postgresql://waypost@127.0.0.1:1/waypost",
        WAYPOST__SECRETS__MASTER_KEY=MASTER_KEY,
    )
    assert code == 2
    assert err.count("\n") == 1, err
    assert "the PostgreSQL database waypost at 127.0.0.1:1 cannot be used" in err
    assert "WAYPOST__DATABASE__URL" in err


def test_an_unopenable_sqlite_file_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'waypost.db'}"
    code, _, err = run(monkeypatch, capsys, "migrate", WAYPOST__DATABASE__URL=url)
    assert code == 2
    assert err.count("\n") == 1, err
    assert "SQLite database" in err
    assert "unable to open" in err


def test_admin_lists_tenants_and_keys_and_revokes_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("WAYPOST__DATABASE__URL", f"sqlite:///{tmp_path / 'waypost.db'}")
    assert run(monkeypatch, capsys, "admin", "create-tenant", "acme")[1] == "acme\n"
    assert run(monkeypatch, capsys, "admin", "create-tenant", "globex")[0] == 0
    made = run(
        monkeypatch, capsys, "admin", "create-api-key", "--tenant", "acme", "--role", "admin",
        "--name", "ci",
    )[1].strip()  # fmt: skip
    run(monkeypatch, capsys, "admin", "create-api-key", "--role", "platform_admin", "--name", "ops")
    code, out, _ = run(monkeypatch, capsys, "admin", "list-tenants")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["acme", "globex"]
    code, out, _ = run(monkeypatch, capsys, "admin", "list-api-keys", "--tenant", "acme")
    [row] = out.splitlines()[1:]
    key_id, prefix, role, state, name = row.split()
    assert (prefix, role, state, name) == (made.split("_")[1], "admin", "active", "ci")
    assert made not in out  # never the key
    code, out, _ = run(monkeypatch, capsys, "admin", "list-api-keys")
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["ops"]
    code, out, _ = run(monkeypatch, capsys, "admin", "revoke-api-key", key_id)
    assert (code, out) == (0, f"revoked API key {key_id} (ci)\n")
    _, out, _ = run(monkeypatch, capsys, "admin", "list-api-keys", "--tenant", "acme")
    assert out.splitlines()[1].split()[3] == "revoked"
    code, _, err = run(monkeypatch, capsys, "admin", "revoke-api-key", "01J00000000000000000000000")
    assert code == 1
    assert "No API key" in err
    code, _, err = run(monkeypatch, capsys, "admin", "list-api-keys", "--tenant", "nope")
    assert code == 1
    assert "No tenant nope" in err


def test_the_password_file_completes_the_url(tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("s3cr:t/@x\n")
    settings = Settings(
        database=DatabaseSettings(
            url="postgresql://waypost@db.example:5432/waypost?sslmode=require",
            password_file=str(secret),
        )
    )
    assert database_url(settings) == (
        "postgresql://waypost:s3cr%3At%2F%40x@db.example:5432/waypost?sslmode=require"
    )
    given = Settings(
        database=DatabaseSettings(
            url="postgresql://waypost:inline@db.example/waypost", password_file=str(secret)
        )
    )
    assert database_url(given) == "postgresql://waypost:inline@db.example/waypost"
    missing = Settings(
        database=DatabaseSettings(
            url="postgresql://waypost@db.example/waypost", password_file=str(tmp_path / "nope")
        )
    )
    with pytest.raises(StartupError, match=r"database\.password_file"):
        database_url(missing)
