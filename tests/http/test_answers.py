"""`JsonAnswer` (entrypoints/http/common.py): Litestar's `Response`, sent the short way.

What reaches the client must be what Litestar's own way sends: the same status, body
and head (the app's own headers added on top of both), and what the short way does not
handle (cookies, background tasks, HEAD, another media type) goes Litestar's way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import msgspec
import pytest
from litestar import Litestar, Response, get, head, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import Cookie
from litestar.response.base import ASGIResponse

from entrypoints.http.common import JsonAnswer, created
from entrypoints.http.views import IdData
from tests.http.conftest import ACME_KEY, HEADERS, receiver_body

pytestmark = pytest.mark.anyio

ran: list[str] = []


class _Thing(msgspec.Struct):
    data: str
    count: int
    when: Any


def _content() -> _Thing:
    return _Thing("é \u2028 <x>", 3, {"nested": [1, 2.5, None, True]})


@post("/litestar", status_code=201)
async def litestar_way() -> Response[_Thing]:
    return Response(_content(), status_code=202, headers={"X-Extra": "1", "Location": "/a/b"})


@post("/short", status_code=201)
async def short_way() -> Response[_Thing]:
    return JsonAnswer(_content(), status_code=202, headers={"X-Extra": "1", "Location": "/a/b"})


@post("/default-status")
async def default_status() -> Response[_Thing]:
    return JsonAnswer(_content())


@post("/with-cookie")
async def with_cookie() -> Response[_Thing]:
    return JsonAnswer(_content(), cookies=[Cookie(key="k", value="v")])


@post("/with-background")
async def with_background() -> Response[_Thing]:
    return JsonAnswer(_content(), background=BackgroundTask(_note, "ran"))


@head("/head")
async def head_way() -> JsonAnswer[None]:
    return JsonAnswer(None)


@get("/vendor", media_type="application/vnd.waypost+json")
async def vendor_way() -> Response[_Thing]:
    return JsonAnswer(_content())


@get("/text", media_type="text/plain")
async def text_way() -> Response[str]:
    return JsonAnswer("plain words", media_type="text/plain")


async def _note(what: str) -> None:
    ran.append(what)


def _app() -> Litestar:
    return Litestar(
        [
            litestar_way,
            short_way,
            default_status,
            with_cookie,
            with_background,
            head_way,
            vendor_way,
            text_way,
        ],
        openapi_config=None,
    )


@pytest.fixture
async def plain() -> AsyncIterator[httpx.AsyncClient]:
    app = _app()
    async with app.lifespan():
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


async def test_the_short_way_sends_what_litestars_way_sends(plain: httpx.AsyncClient) -> None:
    theirs = await plain.post("/litestar")
    ours = await plain.post("/short")
    assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
    assert ours.status_code == 202  # the answer's status over the route's
    assert sorted(ours.headers.multi_items()) == sorted(theirs.headers.multi_items())
    assert ours.headers["content-length"] == str(len(ours.content))
    assert ours.headers["location"] == "/a/b"


async def test_a_route_answers_without_litestars_way(
    plain: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Litestar's way was taken")

    monkeypatch.setattr(Response, "to_asgi_response", refuse)
    assert (await plain.post("/short")).status_code == 202
    with pytest.raises(AssertionError, match="Litestar's way"):
        await plain.post("/with-cookie")


async def test_without_a_status_of_its_own_the_routes_is_used(plain: httpx.AsyncClient) -> None:
    answer = await plain.post("/default-status")
    assert answer.status_code == 201
    assert answer.json()["count"] == 3


async def test_what_the_short_way_does_not_handle_goes_litestars_way(
    plain: httpx.AsyncClient,
) -> None:
    assert (await plain.post("/with-cookie")).headers["set-cookie"].startswith("k=v")
    ran.clear()
    assert (await plain.post("/with-background")).status_code == 201
    assert ran == ["ran"]
    answered = await plain.head("/head")
    assert answered.status_code == 200
    assert answered.content == b""
    vendor = await plain.get("/vendor")  # the route's media type, not JSON's
    assert vendor.headers["content-type"] == "application/vnd.waypost+json"
    assert vendor.json()["count"] == 3
    text = await plain.get("/text")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == "plain words"


def test_created_goes_the_short_way_and_a_cookie_does_not() -> None:
    answer = created("/api/v1/things/1", "1")
    assert isinstance(answer, JsonAnswer)
    assert answer.content == IdData("1")
    request: Any = None  # neither way reads it here
    assert not isinstance(answer.to_asgi_response(None, request), ASGIResponse)
    with_cookie = JsonAnswer(IdData("1"), cookies=[Cookie(key="k", value="v")])
    assert isinstance(with_cookie.to_asgi_response(None, request), ASGIResponse)


async def test_the_apps_headers_still_go_on_a_created_answer(api: httpx.AsyncClient) -> None:
    """Created answers go the short way; the request id and the security headers that the
    app adds to every answer's head are still there, once each."""
    answer = await api.post(
        "/api/v1/receivers",
        json=receiver_body(),
        headers=HEADERS,
    )
    assert answer.status_code == 201, answer.text
    names = [name for name, _ in answer.headers.multi_items()]
    for name in (
        "content-type",
        "content-length",
        "location",
        "x-request-id",
        "content-security-policy",
        "x-content-type-options",
    ):
        assert names.count(name) == 1, (name, names)
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["location"] == f"/api/v1/receivers/{answer.json()['data']}"
    assert ACME_KEY not in str(answer.headers)
