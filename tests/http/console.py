"""A browser-like client of the console for the HTTP tests: signs in through the form,
keeps the session cookie, and sends each form with its CSRF token and origin."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from litestar import Litestar

ORIGIN = "https://testserver.local"
SESSION = "__Host-waypost-console"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Console:
    """One browser profile on the console (cookies are kept by hand: httpx's jar does not
    send `__Host-` cookies the way a browser does)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def _keep(self, answer: httpx.Response) -> None:
        for header in answer.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        found = (
            _TOKEN.search(answer.text)
            if "text/html" in answer.headers.get("content-type", "")
            else None
        )
        if found is not None:
            self.csrf = found.group(1)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        return {**headers, **(extra or {})}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers(kwargs.pop("headers", None))
        answer = await self.http.get(path, headers=headers, **kwargs)
        self._keep(answer)
        return answer

    async def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        csrf: bool = True,
        origin: str | None = ORIGIN,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        extra = {"Origin": origin} if origin else {}
        answer = await self.http.post(
            path, data=form, headers=self._headers({**extra, **(headers or {})})
        )
        self._keep(answer)
        return answer

    async def sign_in(self, *, api_key: str | None = None, **password: str) -> httpx.Response:
        await self.get("/console/sign-in")
        if api_key is not None:
            form = {"method": "api_key", "api_key": api_key}
        else:
            form = {"method": "password", **password}
        answer = await self.post("/console/sign-in", form)
        target = answer
        for _ in range(5):  # to the first page, whose forms carry the session's CSRF token
            if target.status_code != 303:
                break
            target = await self.get(target.headers["location"])
        return answer

    @property
    def session(self) -> str | None:
        return self.cookies.get(SESSION)


@asynccontextmanager
async def console_client(
    app: Litestar, *, address: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """httpx over ASGI to an app whose lifespan already runs, as a browser on `address`
    over HTTPS (the console's cookies are `Secure`)."""
    transport = httpx.ASGITransport(app=cast(Any, app), client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as http:
        yield http
