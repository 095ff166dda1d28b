"""Settings: defaults that need nothing, a TOML file, the environment, and clear refusals."""

from __future__ import annotations

import pathlib

import pytest

from entrypoints.settings import Settings, SettingsError, load_settings


def test_defaults_need_nothing() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.database.url == "sqlite:///./waypost.db"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8042)
    assert settings.mode == "development"


def test_environment_sets_nested_values_with_types() -> None:
    settings = load_settings(
        {
            "WAYPOST__DATABASE__URL": "memory://",
            "WAYPOST__HTTP__PORT": "9000",
            "WAYPOST__MODE": "production",
            "UNRELATED": "x",
        }
    )
    assert settings.database.url == "memory://"
    assert settings.http.port == 9000
    assert settings.mode == "production"


def test_the_file_is_read_and_the_environment_wins(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "waypost.toml"
    config.write_text('mode = "production"\n[http]\nport = 9100\nhost = "0.0.0.0"\n')
    settings = load_settings({"WAYPOST__CONFIG": str(config), "WAYPOST__HTTP__PORT": "9200"})
    assert settings.mode == "production"
    assert settings.http.host == "0.0.0.0"
    assert settings.http.port == 9200


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"WAYPOST__HTTP__PORT": "eighty"}, "WAYPOST__HTTP__PORT"),
        ({"WAYPOST__HTTP__PORT": "0"}, "http.port"),
        ({"WAYPOST__MODE": "staging"}, "WAYPOST__MODE"),
        ({"WAYPOST__HTTP__NOPE": "1"}, "nope"),
        ({"WAYPOST__DATABASE__URL": "mysql://x"}, "database.url"),
        ({"WAYPOST__HTTP__MAX_BODY_BYTES": "10"}, "body limits"),
        ({"WAYPOST__CONFIG": "/nonexistent/waypost.toml"}, "WAYPOST__CONFIG"),
        ({"WAYPOST__MODE": "production", "WAYPOST__HTTP__CORS_ORIGINS": "*"}, "wildcard"),
        ({"WAYPOST__HTTP__CORS_ORIGINS": "example.com"}, "cors_origins"),
        ({"WAYPOST__SECURITY__ADMIN_NETWORKS": "10.0.0.0/33"}, "admin_networks"),
        ({"WAYPOST__SECURITY__ADMIN_NETWORKS": "localhost"}, "admin_networks"),
        ({"WAYPOST__SECRETS__GRACE_SECONDS": "100"}, "grace_seconds"),
        ({"WAYPOST__SECURITY__ACCESS_TOKEN_TTL_SECONDS": "10"}, "access_token_ttl_seconds"),
        ({"WAYPOST__SECRETS__PREPUBLISH_HOURS": "1000"}, "prepublish_hours"),
        ({"WAYPOST__SECRETS__SIGNING_ALGORITHM": "HS256"}, "SIGNING_ALGORITHM"),
        ({"WAYPOST__HTTP__TLS_CERT_FILE": "/c.pem"}, "tls_key_file"),
        ({"WAYPOST__HTTP__TLS_CLIENT_CA_FILE": "/ca.pem"}, "tls_cert_file"),
        (
            {"WAYPOST__SECRETS__MASTER_KEY": "k", "WAYPOST__SECRETS__MASTER_KEY_FILE": "/k"},
            "exclude",
        ),
    ],
)
def test_a_bad_setting_is_named(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(environ)


def test_invalid_toml_is_named(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("mode = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({"WAYPOST__CONFIG": str(config)})


@pytest.mark.parametrize(
    "environ",
    [
        {"WAYPOST__MODE": "development", "WAYPOST__MODE__X": "1"},
        {"WAYPOST__MODE__X": "1", "WAYPOST__MODE": "development"},
    ],
)
def test_a_value_used_as_a_section_is_refused_in_any_order(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="not a"):
        load_settings(environ)


def test_security_defaults_and_lists_from_the_environment() -> None:
    settings = load_settings({})
    assert settings.security.admin_networks == ["127.0.0.0/8", "::1/128"]
    assert settings.http.cors_origins == []
    assert settings.secrets.master_key is None
    assert settings.secrets.grace_seconds >= settings.security.access_token_ttl_seconds + 60
    settings = load_settings(
        {
            "WAYPOST__SECURITY__ADMIN_NETWORKS": "10.0.0.0/8, fd00::/8",
            "WAYPOST__HTTP__CORS_ORIGINS": "https://a.example,http://127.0.0.1:3000",
        }
    )
    assert settings.security.admin_networks == ["10.0.0.0/8", "fd00::/8"]
    assert settings.http.cors_origins == ["https://a.example", "http://127.0.0.1:3000"]
    assert load_settings({"WAYPOST__HTTP__CORS_ORIGINS": "*"}).http.cors_origins == ["*"]


def test_the_master_key_is_never_shown() -> None:
    settings = load_settings({"WAYPOST__SECRETS__MASTER_KEY": "very-secret-master-key-text"})
    assert settings.secrets.master_key == "very-secret-master-key-text"
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings)
