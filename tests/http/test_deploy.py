"""The Grafana dashboard and the Prometheus alert rules under deploy/: every metric they use
exists in `GET /metrics`, and promtool accepts the rules and their unit tests."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.memory.identity import MemoryIdentity
from entrypoints.settings import DatabaseSettings, DeliverySettings
from tests.http.conftest import (
    HEADERS,
    PLATFORM,
    add_tenants,
    asgi_client,
    make_app,
    make_receiver,
    record,
    settings,
)
from tests.http.test_groups import make_group
from tests.integration.loopback_targets import loopback_target
from tests.servers import services_required

pytestmark = pytest.mark.anyio

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "waypost-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "waypost-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "waypost-alerts.test.yml"
#: Series Prometheus makes itself, not the server.
PROMETHEUS_OWN = {"up"}
_FUNCTIONS = {
    "sum", "rate", "min", "max", "by", "histogram_quantile", "time", "topk", "avg", "count",
    "increase", "without", "le", "and", "or", "unless", "on", "ignoring",
}  # fmt: skip


def dashboard_expressions() -> list[str]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def rule_expressions() -> list[str]:
    document = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def metric_names(expression: str) -> set[str]:
    """The series an expression selects (without its label matchers and ranges)."""
    bare = re.sub(r"\{[^}]*\}", "{}", expression)
    bare = re.sub(r"\"[^\"]*\"", "", bare)
    bare = re.sub(r"\$\w+", "", bare)  # Grafana's variables ($__rate_interval)
    found = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b", bare))
    return {name for name in found if "_" in name and name not in _FUNCTIONS} | (
        {"up"} if re.search(r"\bup\{", expression) else set()
    )


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "waypost-overview"
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "instance"}
    titles = [panel["title"] for panel in board["panels"]]
    assert len(titles) == len(set(titles))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'job="waypost"' in target["expr"], target["expr"]
    wanted = (
        "Latency",
        "Events recorded",
        "Rate-limit",
        "Backpressure",
        "Readiness",
        "Signing",
        "Webhook deliveries per second, by outcome",
        "Webhook attempt duration",
        "Webhook lag",
        "Webhook deliveries pending and dead",
        "Webhook breakers",
    )
    for word in wanted:
        assert any(word in title for title in titles), word


async def test_every_metric_the_dashboard_and_the_rules_use_is_in_metrics(
    identity: MemoryIdentity, tmp_path: pathlib.Path
) -> None:
    """On a server that delivers webhooks (its delivery metrics are in its /metrics once a
    webhook went out)."""
    config = settings(
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'waypost.db'}"),
        delivery=DeliverySettings(
            in_process=True, allowed_networks=["127.0.0.0/8"], poll_seconds=0.05
        ),
    )
    with loopback_target() as hook:
        async with asgi_client(make_app(identity, config=config), headers=PLATFORM) as api:
            await add_tenants(api, identity)
            answer = await api.post(
                "/api/v1/subscriptions", json={"name": "hooks", "url": hook.url()}, headers=HEADERS
            )
            assert answer.status_code == 201, answer.text
            build, test = await make_receiver(api, "build"), await make_receiver(api, "test")
            await make_group(api, build, test)
            await record(api, build)
            await record(api, test)
            lag = "waypost_delivery_lag_seconds_bucket"
            with anyio.fail_after(30):  # once the webhooks went out
                while lag not in (await api.get("/metrics")).text:  # noqa: ASYNC110 - HTTP
                    await anyio.sleep(0.05)
            assert (await api.get("/healthz/ready")).status_code == 200
            assert (await api.get("/api/v1/nowhere", headers=HEADERS)).status_code == 404
            text = (await api.get("/metrics")).text
    exposed = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    used = {"dashboard": dashboard_expressions(), "rules": rule_expressions()}
    for where, expressions in used.items():
        names = set().union(*(metric_names(e) for e in expressions))
        assert "waypost_http_requests_total" in names, where
        missing = names - exposed - PROMETHEUS_OWN
        assert not missing, f"the {where} use metrics /metrics does not have: {sorted(missing)}"


def _promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus)"
        if services_required(os.environ):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    promtool = _promtool()
    assert promtool is not None
    for command in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        done = subprocess.run(
            [promtool, *command],
            cwd=RULES.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout
