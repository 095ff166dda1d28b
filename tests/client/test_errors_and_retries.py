"""Typed errors for every problem the server answers, and retries that never record twice.

Faults the server cannot be asked to make (a connection dropped after it answered, a
429 or a 500 on demand) come from a test double at the transport level: it forwards
each request to the real server and then breaks or replaces what comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from waypost_client import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)

from tests.client.conftest import QUICK, Served
from tests.client.test_sdk import SCHEMA, event, key, unique
from tests.e2e.conftest import free_port


class Faulty(httpx.BaseTransport):
    """Forwards to the real server; `fault` may break or replace the answer."""

    def __init__(
        self, fault: Callable[[httpx.Request, httpx.Response], httpx.Response | None]
    ) -> None:
        self.inner = httpx.HTTPTransport()
        self.fault = fault
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        response = self.inner.handle_request(request)
        response.read()
        replaced = self.fault(request, response)
        return response if replaced is None else replaced

    def close(self) -> None:
        self.inner.close()


def problem(status: int, title: str, **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": "test double"}
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **headers}
    )


def test_every_problem_becomes_its_typed_error(served: Served, acme: Client) -> None:
    receiver = acme.create_receiver(unique("e"), "ci.e", "1", schema=SCHEMA)
    with pytest.raises(BadRequest) as bad:
        list(acme.list_events(limit=0))
    assert bad.value.status == 400
    assert bad.value.errors[0].field == "limit"
    assert bad.value.request_id
    with (
        Client(served.url, "wp_nobody00_" + "x" * 43, retry=QUICK) as stranger,
        pytest.raises(Unauthorized) as unauthorized,
    ):
        list(stranger.list_receivers())
    assert unauthorized.value.status == 401
    producer_key = acme.create_api_key(unique("p"), "event_producer").key
    with Client(served.url, producer_key, retry=QUICK) as producer, pytest.raises(Forbidden):
        producer.create_receiver(unique("x"), "x", "1")
    with pytest.raises(NotFound) as missing:
        acme.get_event("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert missing.value.type.startswith("urn:waypost:problem:")
    assert missing.value.detail
    name = unique("c")
    acme.create_receiver(name, "ci.c", "1")
    with pytest.raises(Conflict):
        acme.create_receiver(name, "ci.c", "1", description="another")
    with pytest.raises(PayloadTooLarge):
        acme.create_event(
            **key().params(),
            event_receiver_id=receiver,
            success=True,
            payload={"build": 1, "junk": "x" * 2_000_000},
        )
    with pytest.raises(Unprocessable) as refused:
        acme.create_event(
            **key().params(), event_receiver_id=receiver, success=True, payload={"build": "x"}
        )
    assert refused.value.errors
    assert all(isinstance(e, ApiError) for e in (bad.value, missing.value, refused.value))


def test_429_503_and_500_from_the_double(served: Served) -> None:
    for status, title, error in (
        (429, "Too many requests", RateLimited),
        (503, "Overloaded", ServiceUnavailable),
        (500, "Internal error", ServerError),
        (502, "Bad gateway", ServerError),
    ):

        def answer(
            _request: httpx.Request, _response: httpx.Response, s: int = status, t: str = title
        ) -> httpx.Response:
            return problem(s, t, **{"Retry-After": "0"})

        double = Faulty(answer)
        no_retry = RetryPolicy(attempts=1)
        with Client(served.url, served.acme_key, transport=double, retry=no_retry) as client:
            with pytest.raises(error) as raised:
                list(client.list_receivers())
            assert raised.value.status == status
            assert raised.value.title == title


def test_an_unreachable_server_is_connection_failed_within_the_budget() -> None:
    budget = RetryPolicy(attempts=100, first=0.05, longest=0.2, budget=1.0)
    started = time.monotonic()
    with (
        Client(f"http://127.0.0.1:{free_port()}", "wp_x", retry=budget) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.live()
    assert time.monotonic() - started < 5


def test_a_post_whose_answer_was_lost_is_retried_with_its_key_and_stored_once(
    served: Served, acme: Client
) -> None:
    receiver = acme.create_receiver(unique("r"), "ci.r", "1", schema=SCHEMA)
    k = key(unique("once"))
    dropped: list[str] = []

    def drop_first_post(request: httpx.Request, _response: httpx.Response) -> None:
        if request.method == "POST" and not dropped:
            dropped.append(request.headers["idempotency-key"])
            raise httpx.ReadError("connection dropped after the server committed", request=request)

    double = Faulty(drop_first_post)
    with Client(served.url, served.acme_key, transport=double, retry=QUICK) as client:
        made = client.create_event(
            **k.params(), event_receiver_id=receiver, success=True, payload={"build": 1}
        )
        batch = client.create_events([event(receiver, k), event(receiver, k)])
    posts = [r for r in double.seen if r.method == "POST"]
    assert len(posts) == 3  # the event twice (dropped, retried), the batch once
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert posts[2].headers["idempotency-key"] != posts[0].headers["idempotency-key"]
    stored = [e.id for e in acme.list_events(version=k.version, order="asc")]
    assert stored == [made, *batch]  # one event from the retried POST, not two


def test_retry_after_is_honoured_and_the_key_kept(served: Served, acme: Client) -> None:
    receiver = acme.create_receiver(unique("r"), "ci.r", "1", schema=SCHEMA)
    limited: list[float] = []

    def one_429(request: httpx.Request, _response: httpx.Response) -> httpx.Response | None:
        if request.method == "POST" and not limited:
            limited.append(time.monotonic())
            return problem(429, "Too many requests", **{"Retry-After": "1"})
        return None

    double = Faulty(one_429)
    with Client(served.url, served.acme_key, transport=double, retry=RetryPolicy()) as client:
        client.create_event(
            **key().params(), event_receiver_id=receiver, success=True, payload={"build": 1}
        )
    posts = [r for r in double.seen if r.method == "POST"]
    assert len(posts) == 2
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert time.monotonic() - limited[0] >= 1.0


def test_a_patch_is_not_replayed_after_its_answer_was_lost(served: Served, acme: Client) -> None:
    build = acme.create_receiver(unique("b"), "ci.b", "1", schema=SCHEMA)
    group = acme.create_group(unique("g"), "gate", "1", [build])

    def drop_patch(request: httpx.Request, _response: httpx.Response) -> None:
        if request.method == "PATCH":
            raise httpx.ReadError("dropped", request=request)

    double = Faulty(drop_patch)
    with (
        Client(served.url, served.acme_key, transport=double, retry=QUICK) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.disable_group(group)
    assert [r.method for r in double.seen].count("PATCH") == 1
    assert acme.get_group(group).enabled is False  # it was applied, once


def test_the_budget_bounds_the_retries_of_a_busy_server(served: Served) -> None:
    double = Faulty(lambda _req, _resp: problem(503, "Overloaded", **{"Retry-After": "1"}))
    budget = RetryPolicy(attempts=50, budget=2.5)
    started = time.monotonic()
    with (
        Client(served.url, served.acme_key, transport=double, retry=budget) as client,
        pytest.raises(ServiceUnavailable),
    ):
        client.live()
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 4.0
    assert 2 <= len(double.seen) <= 3
