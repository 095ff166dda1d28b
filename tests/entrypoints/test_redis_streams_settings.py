"""The `redis_streams` settings: from the environment, refused clearly, never shown."""

from __future__ import annotations

import pytest

from entrypoints.settings import SettingsError, load_settings


def test_redis_streams_from_the_environment_and_off_by_default() -> None:
    assert load_settings({}).redis_streams.url is None
    streams = load_settings(
        {
            "WAYPOST__REDIS_STREAMS__URL": "rediss://user:secret@cache.example:6380/2",
            "WAYPOST__REDIS_STREAMS__MAX_LENGTH": "500",
            "WAYPOST__REDIS_STREAMS__POLL_SECONDS": "1.5",
        }
    ).redis_streams
    assert (streams.url, streams.max_length, streams.poll_seconds) == (
        "rediss://user:secret@cache.example:6380/2",
        500,
        1.5,
    )
    assert "secret" not in repr(streams)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("URL", "http://user:secret@cache.example", "redis_streams.url"),
        ("MAX_LENGTH", "0", "redis_streams.max_length"),
        ("POLL_SECONDS", "0", "redis_streams.poll_seconds"),
        ("POLL_SECONDS", "600", "redis_streams.poll_seconds"),
    ],
)
def test_a_bad_redis_streams_setting_is_named_and_no_password_shown(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        load_settings({f"WAYPOST__REDIS_STREAMS__{name}": value})
    assert "secret" not in str(refused.value)
