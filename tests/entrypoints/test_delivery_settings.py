"""WAYPOST__DELIVERY__*: defaults, lists from the environment, and bad values named."""

from __future__ import annotations

import pytest

from entrypoints.settings import SettingsError, load_settings


def test_defaults() -> None:
    delivery = load_settings({}).delivery
    assert delivery.in_process
    assert delivery.timeout_seconds == 15
    assert delivery.retry_schedule_seconds == [5, 30, 120, 600, 1800, 3600, 10800, 21600,
                                               43200, 86400]  # fmt: skip
    assert delivery.allowed_networks == []
    assert delivery.disable_after_hours == 120
    assert not delivery.https_required("development")
    assert delivery.https_required("production")


def test_from_the_environment() -> None:
    delivery = load_settings(
        {
            "WAYPOST__DELIVERY__IN_PROCESS": "false",
            "WAYPOST__DELIVERY__CONCURRENCY": "8",
            "WAYPOST__DELIVERY__SUBSCRIPTION_CONCURRENCY": "2",
            "WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "1, 2.5,60",
            "WAYPOST__DELIVERY__ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128",
            "WAYPOST__DELIVERY__REQUIRE_HTTPS": "true",
            "WAYPOST__DELIVERY__RESPONSE_EXCERPT_BYTES": "0",
        }
    ).delivery
    assert not delivery.in_process
    assert (delivery.concurrency, delivery.subscription_concurrency) == (8, 2)
    assert delivery.retry_schedule_seconds == [1.0, 2.5, 60.0]
    assert delivery.allowed_networks == ["127.0.0.0/8", "::1/128"]
    assert delivery.https_required("development")
    assert delivery.response_excerpt_bytes == 0


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"WAYPOST__DELIVERY__IN_PROCESS": "maybe"}, "WAYPOST__DELIVERY__IN_PROCESS"),
        ({"WAYPOST__DELIVERY__CONCURRENCY": "1"}, "delivery.concurrency"),
        ({"WAYPOST__DELIVERY__CONCURRENCY": "many"}, "WAYPOST__DELIVERY__CONCURRENCY"),
        ({"WAYPOST__DELIVERY__SUBSCRIPTION_CONCURRENCY": "0"}, "subscription_concurrency"),
        ({"WAYPOST__DELIVERY__TIMEOUT_SECONDS": "0"}, "delivery.timeout_seconds"),
        ({"WAYPOST__DELIVERY__TIMEOUT_SECONDS": "inf"}, "delivery.timeout_seconds"),
        ({"WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "5,soon"}, "RETRY_SCHEDULE_SECONDS"),
        ({"WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "5,0"}, "retry_schedule_seconds"),
        ({"WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": ","}, "retry_schedule_seconds"),
        ({"WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "1," * 51}, "retry_schedule_seconds"),
        ({"WAYPOST__DELIVERY__ALLOWED_NETWORKS": "10.0.0.1/8"}, "delivery.allowed_networks"),
        ({"WAYPOST__DELIVERY__ALLOWED_NETWORKS": "intranet"}, "delivery.allowed_networks"),
        ({"WAYPOST__DELIVERY__REQUIRE_HTTPS": "sometimes"}, "REQUIRE_HTTPS"),
        ({"WAYPOST__DELIVERY__DISABLE_AFTER_HOURS": "0"}, "delivery.disable_after_hours"),
        ({"WAYPOST__DELIVERY__RESPONSE_EXCERPT_BYTES": "-1"}, "response_excerpt_bytes"),
        ({"WAYPOST__DELIVERY__RESPONSE_EXCERPT_BYTES": "100000"}, "response_excerpt_bytes"),
        ({"WAYPOST__DELIVERY__POLL_SECONDS": "0"}, "delivery.poll_seconds"),
        ({"WAYPOST__DELIVERY__ORDERING_WAIT_SECONDS": "-1"}, "ordering_wait_seconds"),
        ({"WAYPOST__DELIVERY__TYPO": "1"}, "typo"),
    ],
)
def test_a_bad_value_is_named(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(environ)
