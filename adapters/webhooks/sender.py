"""`WebhookSender` over httpx and httpcore, through the address guard (guard.py).

One attempt: wait for a free connection slot (not counted in the attempt's time), then
within `timeout_seconds`, all of it: resolve, vet, connect to the vetted address, TLS
(certificate checked against the host name), send, and read the answer's status and
headers. Then at most `excerpt_bytes` of the body are read, within what is left of the
time, and the response is closed: a target that answers and then stalls or streams
for ever keeps its answer and costs no more.

What it never does: follow a redirect (a 3xx is an answer), read proxy settings or any
other environment variable, send a header it was not given (only Host and
Content-Length are added: no User-Agent, Accept-Encoding or cookies of its own, and
credentials in the URL are not sent), keep cookies, or retry by itself (the
deliverer decides).

Connections are pooled per origin (scheme, host, port), so attempts to one target
reuse a connection to the address vetted when it was opened; at most
`max_connections` are open at once, and as many attempts run at once (the others wait
for a slot).
"""

from __future__ import annotations

import codecs
import math
import ssl
import time
from collections.abc import AsyncGenerator, Collection
from contextlib import aclosing
from typing import cast

import anyio
import httpcore
import httpx

from adapters.webhooks.guard import (
    PROGRESS,
    AttemptFailed,
    GuardedBackend,
    Progress,
    Resolver,
    system_resolver,
)
from core.domain.addresses import Network
from core.ports import SendFailure, WebhookAnswer, WebhookRequest

__all__ = ["HttpWebhookSender"]

_NO_TIMEOUTS = {"connect": None, "read": None, "write": None, "pool": None}
_CLOSE_GRACE_SECONDS = 1.0


class HttpWebhookSender:
    """POSTs webhooks to targets the address guard lets through.

    - `allowed_networks`: networks an operator allows although the guard refuses them
      (`core.domain.addresses.parse_networks`; e.g. 127.0.0.0/8 for a local receiver).
    - `require_https`: refuse `http://` URLs (`failure="refused"`).
    - `excerpt_bytes`: at most this much of an answer's body is read and kept.
    - `max_connections`: connections open at once, and attempts running at once.
    - `keepalive_seconds`: how long an idle connection is kept for the next attempt.
    - `resolver`: host name -> addresses (default: the system's, off the event loop).
    - `ssl_context`: the certificates to trust (default: certifi's CA bundle, as httpx).
    """

    def __init__(
        self,
        *,
        allowed_networks: Collection[Network] = (),
        require_https: bool = True,
        excerpt_bytes: int = 1024,
        max_connections: int = 100,
        keepalive_seconds: float = 5.0,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if excerpt_bytes < 0:
            raise ValueError(f"excerpt_bytes must be 0 or more, not {excerpt_bytes!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections!r}")
        if not keepalive_seconds >= 0:
            raise ValueError(f"keepalive_seconds must be 0 or more, not {keepalive_seconds!r}")
        self.allowed_networks = tuple(allowed_networks)
        self.require_https = require_https
        self.excerpt_bytes = excerpt_bytes
        self.max_connections = max_connections
        self._backend = GuardedBackend(self.allowed_networks, resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_seconds,
            http1=True,
            http2=False,
            retries=0,
            network_backend=self._backend,
        )
        self._slots: anyio.Semaphore | None = None

    async def send(self, request: WebhookRequest) -> WebhookAnswer:
        timeout = request.timeout_seconds
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout_seconds must be a positive number, not {timeout!r}")
        try:
            outgoing = self._outgoing(request)
        except AttemptFailed as failed:
            return _failed(failed.failure, str(failed), 0.0)
        if self._slots is None:
            self._slots = anyio.Semaphore(self.max_connections)
        async with self._slots:
            return await self._attempt(outgoing, timeout)

    async def close(self) -> None:
        await self._pool.aclose()

    def _outgoing(self, request: WebhookRequest) -> httpcore.Request:
        """The request on the wire: exactly the given headers, plus Host and Content-Length."""
        try:
            url = httpx.URL(request.url)
        except httpx.InvalidURL as error:
            raise AttemptFailed("refused", f"refused: not a valid URL: {error}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise AttemptFailed("refused", "refused: webhooks go to http:// or https:// URLs")
        if url.scheme == "http" and self.require_https:
            raise AttemptFailed("refused", "refused: http:// URL where https is required")
        prepared = httpx.Request("POST", url, headers=request.headers, content=request.body)
        return httpcore.Request(
            method=b"POST",
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=prepared.headers.raw,
            content=request.body,
            extensions={"timeout": _NO_TIMEOUTS},
        )

    async def _attempt(self, outgoing: httpcore.Request, seconds: float) -> WebhookAnswer:
        started = time.perf_counter()
        deadline = anyio.current_time() + seconds
        progress = Progress()
        token = PROGRESS.set(progress)
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                try:
                    response = await self._pool.handle_async_request(outgoing)
                except AttemptFailed as failed:
                    return _failed(failed.failure, str(failed), _since(started))
                except httpcore.ProtocolError as error:
                    return _failed("protocol", _protocol(error), _since(started))
                except httpcore.NetworkError as error:  # the connection broke mid-exchange
                    return _failed("protocol", _protocol(error), _since(started))
            if scope.cancelled_caught:
                message = f"no answer within {seconds:g} s ({progress.phase})"
                return _failed("timeout", message, _since(started))
        finally:
            PROGRESS.reset(token)
        excerpt = await self._excerpt(response, deadline)
        return WebhookAnswer(
            status_code=response.status,
            duration_ms=_since(started),
            retry_after=_header(response.headers, b"retry-after"),
            excerpt=excerpt,
        )

    async def _excerpt(self, response: httpcore.Response, deadline: float) -> str:
        """The start of the body, at most `excerpt_bytes`; the response is closed after."""
        limit = self.excerpt_bytes
        kept = bytearray()
        try:
            with anyio.CancelScope(deadline=deadline):
                if limit:
                    # an async generator (typed as an iterator): closed at once, not by the GC
                    body = cast(AsyncGenerator[bytes, None], response.aiter_stream())
                    async with aclosing(body) as chunks:
                        async for chunk in chunks:
                            kept += chunk[: limit - len(kept)]
                            if len(kept) >= limit:
                                break
        except (httpcore.ProtocolError, httpcore.NetworkError):
            pass  # the answer stands; its body ended early
        finally:
            with anyio.move_on_after(_CLOSE_GRACE_SECONDS, shield=True):
                await response.aclose()
        return codecs.getincrementaldecoder("utf-8")("replace").decode(bytes(kept), final=False)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _failed(failure: SendFailure, error: str, duration_ms: float) -> WebhookAnswer:
    return WebhookAnswer(status_code=None, duration_ms=duration_ms, failure=failure, error=error)


def _protocol(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"no valid HTTP answer: {text}"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
