"""The operations settings are checked at start, each bad value named."""

from __future__ import annotations

import pathlib

import pytest

from entrypoints.settings import SettingsError, load_settings

TLS = {
    "WAYPOST__HTTP__TLS_CERT_FILE": "/etc/waypost/server.pem",
    "WAYPOST__HTTP__TLS_KEY_FILE": "/etc/waypost/server.key",
    "WAYPOST__HTTP__TLS_CLIENT_CA_FILE": "/etc/waypost/ca.pem",
}


def _identities(tmp_path: pathlib.Path, body: str, **environ: str) -> None:
    config = tmp_path / "waypost.toml"
    config.write_text(body)
    load_settings({"WAYPOST__CONFIG": str(config), **environ})


def entry(match: str, role: str = "event_viewer") -> str:
    return f'[[http.service_identities]]\nmatch = "{match}"\ntenant = "acme"\nrole = "{role}"\n'


def test_service_identities(tmp_path: pathlib.Path) -> None:
    _identities(tmp_path, entry("CN=ci, O=Example") + entry("dns:ci.example.com"), **TLS)
    for body, problem in (
        (entry("CN=ci", role="platform_admin"), r"\.role must be one of"),
        (entry("ci-runner"), r"\.match must be a subject"),
        (entry("dns:"), "names no value"),
        (entry("ip:not-an-ip"), "is not an IP address"),
        (entry("CN=ci") + entry("CN=ci"), "is mapped twice"),
    ):
        with pytest.raises(SettingsError, match=problem):
            _identities(tmp_path, body, **TLS)
    with pytest.raises(SettingsError, match="need mTLS"):
        _identities(tmp_path, entry("CN=ci"))


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"WAYPOST__TRACING__OTLP_ENDPOINT": "collector:4318"}, "tracing.otlp_endpoint"),
        ({"WAYPOST__TRACING__SAMPLE_RATIO": "1.5"}, "tracing.sample_ratio"),
        ({"WAYPOST__TRACING__SERVICE_NAME": " "}, "tracing.service_name"),
        ({"WAYPOST__DATABASE__READ_URL": "postgresql://replica/db"}, "database.read_url"),
        ({"WAYPOST__DATABASE__READ_MAX_LAG_SECONDS": "0"}, "read_max_lag_seconds"),
        (
            {
                "WAYPOST__SECRETS__PREVIOUS_MASTER_KEY": "x",
                "WAYPOST__SECRETS__PREVIOUS_MASTER_KEY_FILE": "y",
            },
            "exclude each other",
        ),
    ],
)
def test_bad_values_stop_the_start_naming_the_setting(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(SettingsError, match=problem):
        load_settings(environ)


def test_good_values() -> None:
    settings = load_settings(
        {
            "WAYPOST__TRACING__OTLP_ENDPOINT": "http://collector:4318",
            "WAYPOST__TRACING__SAMPLE_RATIO": "0.25",
            "WAYPOST__DATABASE__URL": "postgresql://primary/db",
            "WAYPOST__DATABASE__READ_URL": "postgresql://replica/db",
        }
    )
    assert settings.tracing.sample_ratio == 0.25
    assert settings.database.read_url == "postgresql://replica/db"
    assert "replica" not in repr(settings.database)
