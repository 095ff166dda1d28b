"""Metrics as JSON: `/api/v1/metrics`, `/summary`, `/{name}` read the registry of `/metrics`."""

from __future__ import annotations

import pytest

from entrypoints.http.metrics_json import Key, Snapshots, histogram_quantile, summarize
from entrypoints.settings import MetricsSettings, SecuritySettings
from tests.http.conftest import (
    HEADERS,
    PLATFORM,
    Client,
    asgi_client,
    assert_problem,
    client_from,
    make_app,
    make_receiver,
    platform_identity,
    record,
    settings,
)
from tests.http.test_groups import make_group
from tests.http.test_metrics import scrape

pytestmark = pytest.mark.anyio

METRICS = "/api/v1/metrics"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_quantiles_are_interpolated_inside_their_bucket(anyio_backend: str) -> None:
    buckets = [(0.001, 50.0), (0.01, 90.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.001 + 0.009 * 20 / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.01 + 0.09 * 9 / 10)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.0005)  # from 0 to the bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    # beyond the last finite bound: that bound (as Prometheus answers)
    assert histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_the_window_starts_at_the_oldest_reading_of_the_last_minute(anyio_backend: str) -> None:
    kept = Snapshots(started=0.0)
    assert kept.base(10.0) == (0.0, {})  # nothing kept: since the start
    kept.take(100.0, {("a", ()): 1.0})
    kept.take(100.5, {("a", ()): 2.0})  # too soon after the last: not kept
    kept.take(130.0, {("a", ()): 3.0})
    assert kept.base(150.0) == (100.0, {("a", ()): 1.0})
    assert kept.base(170.0) == (130.0, {("a", ()): 3.0})  # the first fell out of the window
    assert kept.base(1000.0) == (0.0, {})


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_a_summary_of_two_readings(anyio_backend: str) -> None:
    requests = "waypost_http_requests_total"
    route = (("method", "GET"), ("route", "/x"), ("status", "200"))
    failed = (("method", "GET"), ("route", "/x"), ("status", "503"))
    then: dict[Key, float] = {(requests, route): 10.0}
    now: dict[Key, float] = {(requests, route): 28.0, (requests, failed): 2.0}
    found = summarize(now, then, 10.0)
    assert found.requests.total == 20.0
    assert found.requests.per_second == 2.0
    assert found.requests.error_rate == pytest.approx(0.1)
    assert found.requests.client_error_rate == 0.0
    assert found.latency_seconds.p99 is None
    assert found.deliveries is None


async def test_every_metric_as_json_is_what_metrics_exposes(api: Client) -> None:
    receiver = await make_receiver(api)
    await record(api, receiver)
    answer = await api.get(METRICS)
    assert answer.status_code == 200, answer.text
    families = {f["name"]: f for f in answer.json()["data"]}
    _, exposed = await scrape(api)
    requests = families["waypost_http_requests"]
    assert requests["type"] == "counter"
    assert requests["help"].startswith("HTTP requests answered")
    for sample in requests["samples"]:
        key = (sample["name"], tuple(sorted(sample["labels"].items())))
        if sample["labels"].get("route") != "/metrics":  # the scrape came after
            assert exposed[key] == sample["value"], key
    events = families["waypost_events_recorded"]["samples"]
    assert {s["name"]: s["value"] for s in events}["waypost_events_recorded_total"] == 1.0
    assert "process_cpu_seconds" in families


async def test_one_metric_by_its_name_or_a_samples_name(api: Client) -> None:
    first = (await api.get(f"{METRICS}/waypost_events_recorded")).json()["data"]
    second = (await api.get(f"{METRICS}/waypost_events_recorded_total")).json()["data"]
    assert first["name"] == second["name"] == "waypost_events_recorded"
    assert first["type"] == "counter"
    body = assert_problem(await api.get(f"{METRICS}/no_such_metric"), 404)
    assert "no_such_metric" in body["detail"]


async def test_the_summary_counts_what_happened(api: Client) -> None:
    build, test = await make_receiver(api, "build"), await make_receiver(api, "test")
    await make_group(api, build, test)
    for _ in range(3):
        await record(api, build)
    await record(api, test)  # the gate fires
    assert_problem(await api.get("/api/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=HEADERS), 404)
    answer = await api.get(f"{METRICS}/summary")
    assert answer.status_code == 200, answer.text
    found = answer.json()["data"]
    assert found["events_recorded"]["total"] == 4
    assert found["gates_fired"]["total"] == 1
    assert found["events_recorded"]["per_second"] > 0
    requests = found["requests"]
    assert requests["total"] >= 10
    assert requests["per_second"] > 0
    assert requests["error_rate"] == 0.0
    assert 0 < requests["client_error_rate"] < 1
    assert requests["in_flight"] == 1.0  # the summary itself
    latency = found["latency_seconds"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert found["deliveries"] is None
    assert found["window_seconds"] > 0


async def test_only_platform_administrators_read_them(api: Client) -> None:
    for path in (METRICS, f"{METRICS}/summary", f"{METRICS}/waypost_events_recorded"):
        assert_problem(await api.get(path, headers=HEADERS), 403)
        assert_problem(await api.get(path, headers={"Authorization": ""}), 401)
        assert (await api.get(path, headers=PLATFORM)).status_code == 200


async def test_only_from_the_allowed_networks() -> None:
    config = settings(
        metrics=MetricsSettings(allowed_networks=["10.0.0.0/8"]),
        security=SecuritySettings(admin_networks=["10.0.0.0/8", "11.0.0.0/8"]),
    )
    app = make_app(await platform_identity(), config=config)
    async with asgi_client(app, headers=PLATFORM):
        async with client_from(app, "10.1.2.3") as inside:
            assert (await inside.get(f"{METRICS}/summary", headers=PLATFORM)).status_code == 200
        async with client_from(app, "11.0.0.1") as outside:
            body = assert_problem(await outside.get(f"{METRICS}/summary", headers=PLATFORM), 403)
            assert "address" in body["detail"]


async def test_switched_off_with_the_metrics() -> None:
    config = settings(metrics=MetricsSettings(enabled=False))
    async with asgi_client(make_app(await platform_identity(), config=config)) as client:
        assert_problem(await client.get(f"{METRICS}/summary", headers=PLATFORM), 404)
        assert_problem(await client.get(METRICS, headers=PLATFORM), 404)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_deliveries_are_summed_by_outcome_with_their_lag(anyio_backend: str) -> None:
    """What the summary makes of the delivery metrics, once a server delivers webhooks."""
    deliveries = "waypost_deliveries_total"
    lag = "waypost_delivery_lag_seconds_bucket"
    ok = (("outcome", "succeeded"), ("subscription_kind", "webhook"))
    dead = (("outcome", "dead"), ("subscription_kind", "webhook"))
    now: dict[Key, float] = {
        (deliveries, ok): 90.0,
        (deliveries, dead): 10.0,
        (lag, (("le", "0.1"),)): 50.0,
        (lag, (("le", "1.0"),)): 100.0,
        (lag, (("le", "+Inf"),)): 100.0,
    }
    found = summarize(now, {}, 10.0).deliveries
    assert found is not None
    assert found.by_outcome == {"succeeded": 90.0, "dead": 10.0}
    assert found.lag_seconds.p50 == pytest.approx(0.1)
    assert found.lag_seconds.p99 == pytest.approx(0.1 + 0.9 * 49 / 50)
