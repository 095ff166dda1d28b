"""The composition root's master key: given, read from a file, or (development only) made."""

from __future__ import annotations

import logging
import pathlib
import stat
from typing import Any

import pytest

from adapters.crypto.envelope import generate_master_key, parse_master_key
from entrypoints.bootstrap import MASTER_KEY_SUFFIX, StartupError, master_keys
from entrypoints.settings import DatabaseSettings, SecretsSettings, Settings


def sqlite(tmp_path: pathlib.Path, **secrets: Any) -> Settings:
    return Settings(
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'waypost.db'}"),
        secrets=SecretsSettings(**secrets),
    )


def test_a_given_master_key_is_used(tmp_path: pathlib.Path) -> None:
    key = generate_master_key()
    assert master_keys(sqlite(tmp_path, master_key=key)) == [parse_master_key(key)]
    path = tmp_path / "master.key"
    path.write_text(key + "\n")
    assert master_keys(sqlite(tmp_path, master_key_file=str(path))) == [parse_master_key(key)]
    assert not list(tmp_path.glob(f"*{MASTER_KEY_SUFFIX}"))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"master_key": "too short"}, "MASTER_KEY"),
        ({"master_key_file": "/nonexistent"}, "cannot read"),
    ],
)
def test_a_bad_master_key_stops_the_start(
    tmp_path: pathlib.Path, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(StartupError, match=message):
        master_keys(sqlite(tmp_path, **given))


def test_development_makes_a_private_key_file_beside_sqlite_once(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="waypost"):
        first = master_keys(sqlite(tmp_path))
    path = tmp_path / f"waypost.db{MASTER_KEY_SUFFIX}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text
    assert "production" in caplog.text
    assert master_keys(sqlite(tmp_path)) == first


def test_production_without_a_master_key_refuses_to_start(tmp_path: pathlib.Path) -> None:
    settings = Settings(
        mode="production", database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'w.db'}")
    )
    with pytest.raises(StartupError, match="WAYPOST__SECRETS__MASTER_KEY"):
        master_keys(settings)
    assert not list(tmp_path.iterdir())


def test_postgresql_needs_a_given_master_key() -> None:
    settings = Settings(database=DatabaseSettings(url="postgresql://u@127.0.0.1/w"))
    with pytest.raises(StartupError, match="PostgreSQL"):
        master_keys(settings)
