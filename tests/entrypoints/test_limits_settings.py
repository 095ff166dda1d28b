"""The `limits` settings: from the environment, and refused when they mean nothing."""

from __future__ import annotations

import pytest

from entrypoints.settings import LimitsSettings, SettingsError, load_settings


def test_limits_from_the_environment() -> None:
    limits = load_settings(
        {
            "WAYPOST__LIMITS__REQUESTS_PER_SECOND": "12.5",
            "WAYPOST__LIMITS__BURST": "30",
            "WAYPOST__LIMITS__AUTH_REQUESTS_PER_MINUTE": "6",
            "WAYPOST__LIMITS__AUTH_BURST": "3",
            "WAYPOST__LIMITS__MAX_IN_FLIGHT": "64",
            "WAYPOST__LIMITS__MAX_STREAMS": "5",
            "WAYPOST__LIMITS__MAX_WAITERS": "7",
            "WAYPOST__LIMITS__TRACKED_CALLERS": "1000",
        }
    ).limits
    assert limits == LimitsSettings(
        requests_per_second=12.5,
        burst=30,
        auth_requests_per_minute=6,
        auth_burst=3,
        max_in_flight=64,
        max_streams=5,
        max_waiters=7,
        tracked_callers=1000,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REQUESTS_PER_SECOND", "0"),
        ("REQUESTS_PER_SECOND", "-1"),
        ("REQUESTS_PER_SECOND", "nan"),
        ("REQUESTS_PER_SECOND", "inf"),
        ("AUTH_REQUESTS_PER_MINUTE", "0"),
        ("BURST", "0"),
        ("AUTH_BURST", "0"),
        ("MAX_IN_FLIGHT", "0"),
        ("MAX_STREAMS", "0"),
        ("MAX_WAITERS", "0"),
        ("TRACKED_CALLERS", "0"),
        ("BURST", "many"),
    ],
)
def test_a_limit_that_means_nothing_stops_the_start_naming_it(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.lower() + "|" + name):
        load_settings({f"WAYPOST__LIMITS__{name}": value})
