"""The settings of running several processes: `redis`, trusted proxies, the database's pool,
password file and lock wait, workers. From the environment, refused clearly, never shown."""

from __future__ import annotations

import pytest

from entrypoints.settings import SettingsError, load_settings


def test_redis_from_the_environment_and_off_by_default() -> None:
    assert load_settings({}).redis.url is None
    redis = load_settings(
        {
            "WAYPOST__REDIS__URL": "rediss://user:secret@cache.example:6380/2",
            "WAYPOST__REDIS__STREAM_MAX_LENGTH": "500",
            "WAYPOST__REDIS__STREAM_POLL_SECONDS": "1.5",
            "WAYPOST__REDIS__SHARED_LIMITS": "false",
            "WAYPOST__REDIS__PUBLISH_MESSAGES": "true",
            "WAYPOST__REDIS__TIMEOUT_SECONDS": "0.5",
            "WAYPOST__REDIS__RETRY_SECONDS": "2",
        }
    ).redis
    assert (redis.url, redis.stream_max_length, redis.stream_poll_seconds) == (
        "rediss://user:secret@cache.example:6380/2",
        500,
        1.5,
    )
    assert (redis.shared_limits, redis.publish_messages) == (False, True)
    assert (redis.timeout_seconds, redis.retry_seconds) == (0.5, 2.0)
    assert "secret" not in repr(redis)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("URL", "http://user:secret@cache.example", "redis.url"),
        ("STREAM_MAX_LENGTH", "0", "redis.stream_max_length"),
        ("STREAM_POLL_SECONDS", "0", "redis.stream_poll_seconds"),
        ("STREAM_POLL_SECONDS", "600", "redis.stream_poll_seconds"),
        ("TIMEOUT_SECONDS", "0", "redis.timeout_seconds"),
        ("RETRY_SECONDS", "0", "redis.retry_seconds"),
    ],
)
def test_a_bad_redis_setting_is_named_and_no_password_shown(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        load_settings({f"WAYPOST__REDIS__{name}": value})
    assert "secret" not in str(refused.value)


def test_the_old_redis_streams_section_says_where_it_went() -> None:
    with pytest.raises(SettingsError, match="WAYPOST__REDIS__URL"):
        load_settings({"WAYPOST__REDIS_STREAMS__URL": "redis://cache.example"})


def test_trusted_proxies_and_their_header() -> None:
    assert load_settings({}).http.trusted_proxies == []
    http = load_settings(
        {
            "WAYPOST__HTTP__TRUSTED_PROXIES": "10.0.0.0/8, ::1/128",
            "WAYPOST__HTTP__PROXY_HEADER": "forwarded",
        }
    ).http
    assert http.trusted_proxies == ["10.0.0.0/8", "::1/128"]
    assert http.proxy_header == "forwarded"


def test_database_pool_password_file_and_lock_wait() -> None:
    database = load_settings(
        {
            "WAYPOST__DATABASE__URL": "postgresql://waypost:secret@db.example/waypost",
            "WAYPOST__DATABASE__POOL_SIZE": "25",
            "WAYPOST__DATABASE__PASSWORD_FILE": "/run/secrets/db",
            "WAYPOST__DATABASE__BUSY_TIMEOUT_SECONDS": "2.5",
        }
    ).database
    assert (database.pool_size, database.password_file) == (25, "/run/secrets/db")
    assert database.busy_timeout_seconds == 2.5
    assert "secret" not in repr(database)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WAYPOST__HTTP__TRUSTED_PROXIES": "10.0.0.0/33"}, "http.trusted_proxies"),
        ({"WAYPOST__HTTP__TRUSTED_PROXIES": "proxy.example"}, "http.trusted_proxies"),
        ({"WAYPOST__HTTP__PROXY_HEADER": "x-real-ip"}, "PROXY_HEADER"),
        ({"WAYPOST__HTTP__WORKERS": "0"}, "http.workers"),
        ({"WAYPOST__HTTP__WORKERS": "65"}, "http.workers"),
        ({"WAYPOST__DATABASE__POOL_SIZE": "0"}, "database.pool_size"),
        ({"WAYPOST__DATABASE__BUSY_TIMEOUT_SECONDS": "0"}, "database.busy_timeout_seconds"),
        ({"WAYPOST__DATABASE__URL": "mysql://u:secret@db"}, "database.url"),
    ],
)
def test_bad_operations_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        load_settings(environ)
    assert "secret" not in str(refused.value)
