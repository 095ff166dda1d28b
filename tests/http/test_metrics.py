"""GET /metrics: the Prometheus text of HTTP and domain counts, labelled by route templates,
never by anything of a tenant; restricted to networks or switched off by the settings."""

from __future__ import annotations

import logging

import prometheus_client
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from prometheus_client.parser import text_string_to_metric_families

from entrypoints.http.metrics import CONTENT_TYPE, UNMATCHED, MetricsMiddleware
from entrypoints.settings import MetricsSettings, SettingsError, load_settings
from tests.http.conftest import (
    ACME_KEY,
    GLOBEX_KEY,
    HEADERS,
    OTHER,
    OTHER_HEADERS,
    PLATFORM,
    PLATFORM_KEY,
    TENANT,
    Client,
    add_tenants,
    asgi_client,
    assert_problem,
    client_from,
    event_body,
    make_app,
    make_receiver,
    platform_identity,
    record,
    settings,
    tenant_id,
)
from tests.http.test_groups import GROUPS, make_group
from tests.http.test_problems import BrokenReads

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
EVENT = "/api/v1/events/{event_id}"
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
#: The label names a Waypost metric may have (`le`: a histogram bucket's bound).
LABELS = {"method", "route", "status", "le"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: Client) -> tuple[str, Samples]:
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == CONTENT_TYPE
    return answer.text, parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests(samples: Samples, method: str, route: str, status: int) -> float:
    return value(
        samples, "waypost_http_requests_total", method=method, route=route, status=str(status)
    )


def templates(app: Litestar) -> set[str]:
    return {route.path_format for route in app.routes if isinstance(route, HTTPRoute)}


async def test_the_exposition_parses_into_every_metric(client: Client) -> None:
    await client.get("/healthz/live")
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    # (prometheus_client also writes a `<counter>_created` gauge beside each counter and
    # histogram, unless PROMETHEUS_DISABLE_CREATED_SERIES is set.)
    kinds = {
        name: family.type
        for name, family in families.items()
        if name.startswith("waypost") and not name.endswith("_created")
    }
    assert kinds == {
        "waypost_http_requests": "counter",
        "waypost_http_request_duration_seconds": "histogram",
        "waypost_http_requests_in_flight": "gauge",
        "waypost_events_recorded": "counter",
        "waypost_group_completions": "counter",
        "waypost_rate_limits_shared": "gauge",
        "waypost_ready": "gauge",
        "waypost_signing_key_activated_timestamp_seconds": "gauge",
    }
    assert "process_cpu_seconds" in families
    samples = parse(answer.text)
    # Only the scrape itself is being served: every earlier request was let go.
    assert value(samples, "waypost_http_requests_in_flight") == 1.0
    assert requests(samples, "GET", "/healthz/live", 200) == 1.0


async def test_requests_are_counted_by_template_method_and_status(api: Client) -> None:
    receiver = await make_receiver(api)
    _, before = await scrape(api)
    made = await record(api, receiver)
    refused = await api.post(EVENTS, json=event_body(UNKNOWN_ID), headers=HEADERS)
    assert_problem(refused, 422, "/event_receiver_id")
    assert (await api.get(f"{EVENTS}/{made}", headers=HEADERS)).status_code == 200
    assert_problem(await api.get(f"{EVENTS}/{UNKNOWN_ID}", headers=HEADERS), 404)
    assert_problem(await api.get(f"/nothing/here/{made}", headers=HEADERS), 404)
    assert_problem(await api.request("BREW", EVENTS, headers=HEADERS), 405)
    text, after = await scrape(api)

    def delta(method: str, route: str, status: int) -> float:
        return requests(after, method, route, status) - requests(before, method, route, status)

    assert delta("POST", EVENTS, 201) == 1
    assert delta("POST", EVENTS, 422) == 1
    assert delta("GET", EVENT, 200) == 1
    assert delta("GET", EVENT, 404) == 1
    assert delta("GET", UNMATCHED, 404) == 1
    assert delta("other", UNMATCHED, 405) == 1  # a method the client made up is not a label
    assert delta("GET", "/metrics", 200) == 1  # the first scrape
    duration = "waypost_http_request_duration_seconds"
    for suffix in ("_count", "_bucket"):
        labels = {"le": "+Inf"} if suffix == "_bucket" else {}
        counted = value(after, duration + suffix, method="POST", route=EVENTS, **labels)
        earlier = value(before, duration + suffix, method="POST", route=EVENTS, **labels)
        assert counted - earlier == 2, suffix
    spent = value(after, duration + "_sum", method="POST", route=EVENTS)
    assert spent > value(before, duration + "_sum", method="POST", route=EVENTS)
    # Templates, never paths: no id of the event (nor the made-up one) is in any label.
    assert made not in text
    assert UNKNOWN_ID not in text
    assert "BREW" not in text
    assert "/nothing" not in text


async def test_an_unexpected_failure_is_counted_as_500_under_its_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with asgi_client(
        make_app(await platform_identity(), store=BrokenReads()), headers=PLATFORM
    ) as client:
        with caplog.at_level(logging.CRITICAL, logger="waypost.http"):
            assert (await client.get("/api/v1/tenants")).status_code == 500
        _, samples = await scrape(client)
    assert requests(samples, "GET", "/api/v1/tenants", 500) == 1


async def test_events_and_group_completions_are_counted(api: Client) -> None:
    build, test = await make_receiver(api, "build"), await make_receiver(api, "test")
    await make_group(api, build, test)
    _, before = await scrape(api)

    async def moved() -> tuple[float, float]:
        nonlocal before
        _, now = await scrape(api)
        names = ("waypost_events_recorded_total", "waypost_group_completions_total")
        counts = tuple(value(now, name) - value(before, name) for name in names)
        before = now
        return counts[0], counts[1]

    await record(api, build)
    assert await moved() == (1, 0)
    await record(api, test)  # the gate completes
    assert await moved() == (1, 1)
    await record(api, build)  # already complete: fires nothing
    assert await moved() == (1, 0)

    batch = {"events": [event_body(build, release=str(n)) for n in range(3)]}
    answer = await api.post(f"{EVENTS}/batch", json=batch, headers=HEADERS)
    assert answer.status_code == 201, answer.text
    assert await moved() == (3, 0)
    # A batch that completes the gate for two artifacts fires it twice.
    batch = {"events": [event_body(test, release=str(n)) for n in (0, 2)]}
    answer = await api.post(f"{EVENTS}/batch", json=batch, headers=HEADERS)
    assert answer.status_code == 201, answer.text
    assert await moved() == (2, 2)

    batch = {"events": [event_body(build), event_body(UNKNOWN_ID)]}
    refused = await api.post(f"{EVENTS}/batch", json=batch, headers=HEADERS)
    assert_problem(refused, 422, "/events/1/event_receiver_id")
    assert await moved() == (0, 0)  # all or nothing: nothing recorded, nothing counted

    # An Idempotency-Key replay answers again without recording again.
    keyed = {**HEADERS, "Idempotency-Key": "metrics-once"}
    for _ in range(2):
        answer = await api.post(EVENTS, json=event_body(build), headers=keyed)
        assert answer.status_code == 201, answer.text
    assert answer.headers["idempotent-replayed"] == "true"
    assert await moved() == (1, 0)


async def test_no_label_holds_anything_of_a_tenant(app: Litestar, api: Client) -> None:
    ids = [await tenant_id(api, TENANT), await tenant_id(api, OTHER)]
    for headers in (HEADERS, OTHER_HEADERS):
        receiver = await make_receiver(api, "build", headers=headers)
        ids.append(receiver)
        ids.append(
            (await api.post(EVENTS, json=event_body(receiver), headers=headers)).json()["data"]
        )
    group = await make_group(api, ids[2])
    ids.append(group)
    await api.get(f"{GROUPS}/{group}/status", params={"name": "x"}, headers=HEADERS)
    await api.get(f"/api/v1/tenants/{TENANT}", headers=PLATFORM)
    await api.get(f"/api/v1/tenants/{OTHER}", headers=PLATFORM)
    text, samples = await scrape(api)
    for secret in (*ids, TENANT, OTHER, "Acme", "Globex", ACME_KEY, GLOBEX_KEY, PLATFORM_KEY):
        assert secret not in text, secret
    allowed = {*templates(app), UNMATCHED}
    routes = set()
    for name, labels in samples:
        if name.startswith("waypost_"):
            assert {label for label, _ in labels} <= LABELS, (name, labels)
            routes |= {v for label, v in labels if label == "route"}
    assert "/api/v1/tenants/{slug}" in routes
    assert routes <= allowed


async def test_disabled_metrics_have_no_route_and_no_middleware() -> None:
    identity = await platform_identity()
    app = make_app(identity, config=settings(metrics=MetricsSettings(enabled=False)))
    assert not isinstance(app.asgi_handler, MetricsMiddleware)
    assert "/metrics" not in templates(app)
    async with asgi_client(app, headers=PLATFORM) as client:
        assert_problem(await client.get("/metrics"), 404)
        # The event routes record without metrics to count them in.
        await add_tenants(client, identity)
        await record(client, await make_receiver(client))


async def test_allowed_networks_restrict_who_reads_them() -> None:
    config = settings(metrics=MetricsSettings(allowed_networks=["10.0.0.0/8", "fd00::/8"]))
    app = make_app(await platform_identity(), config=config)
    async with asgi_client(app) as loopback:  # 127.0.0.1
        body = assert_problem(await loopback.get("/metrics"), 403)
        assert body["type"] == "urn:waypost:problem:forbidden"
        async with client_from(app, "10.1.2.3") as inside:
            assert (await scrape(inside))[1]  # parses, and has samples
        async with client_from(app, "fd00::7") as inside:
            await scrape(inside)
        async with client_from(app, "11.0.0.1") as outside:
            assert_problem(await outside.get("/metrics"), 403)
        # Refused scrapes are still requests like any other.
        async with client_from(app, "10.1.2.3") as inside:
            _, samples = await scrape(inside)
        assert requests(samples, "GET", "/metrics", 403) == 2

    config = settings(metrics=MetricsSettings(allowed_networks=["127.0.0.0/8"]))
    async with asgi_client(make_app(await platform_identity(), config=config)) as loopback:
        await scrape(loopback)


async def test_two_apps_in_one_process_count_apart() -> None:
    first = make_app(await platform_identity())
    second = make_app(await platform_identity())
    async with asgi_client(first) as one, asgi_client(second) as two:
        for _ in range(3):
            await one.get("/healthz/live")
        await two.get("/healthz/ready")
        _, counted_one = await scrape(one)
        _, counted_two = await scrape(two)
    assert requests(counted_one, "GET", "/healthz/live", 200) == 3
    assert requests(counted_one, "GET", "/healthz/ready", 200) == 0
    assert requests(counted_two, "GET", "/healthz/live", 200) == 0
    assert requests(counted_two, "GET", "/healthz/ready", 200) == 1
    # Nothing goes to the process-wide registry (which would refuse a second app).
    assert "waypost_" not in prometheus_client.generate_latest().decode()


def test_settings_defaults_and_environment() -> None:
    defaults = load_settings({})
    assert defaults.metrics == MetricsSettings(enabled=True, allowed_networks=[])
    given = load_settings(
        {
            "WAYPOST__METRICS__ENABLED": "false",
            "WAYPOST__METRICS__ALLOWED_NETWORKS": "10.0.0.0/8, ::1/128",
        }
    )
    assert given.metrics == MetricsSettings(
        enabled=False, allowed_networks=["10.0.0.0/8", "::1/128"]
    )


@pytest.mark.parametrize("network", ["10.0.0.0/33", "localhost", "fd00::/129", ""])
def test_a_bad_network_is_named(network: str) -> None:
    with pytest.raises(SettingsError, match=r"metrics\.allowed_networks"):
        settings(metrics=MetricsSettings(allowed_networks=[network]))
    if network:
        with pytest.raises(SettingsError, match=r"metrics\.allowed_networks"):
            load_settings({"WAYPOST__METRICS__ALLOWED_NETWORKS": f"10.0.0.0/8,{network}"})
