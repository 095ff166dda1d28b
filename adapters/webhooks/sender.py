"""`WebhookSender` over our own HTTP/1.1 connections, through the address guard (guard.py).

One attempt: wait for a free attempt slot (not counted in the attempt's time), then
within `timeout_seconds`, all of it: take a kept-alive connection to the origin or
resolve, vet, connect to the vetted address and run TLS (certificate checked against
the host name); send, and read the answer's status and headers and at most
`excerpt_bytes` of its body (http1.py). A target that answers and then stalls or
streams for ever keeps its answer and costs no more.

What it never does: follow a redirect (a 3xx is an answer), read proxy settings or any
other environment variable, send a header it was not given (only Host and
Content-Length are added: no User-Agent, Accept-Encoding or cookies of its own, and
credentials in the URL are not sent), keep cookies, or retry by itself (the
deliverer decides).

Connections are kept per origin (scheme, host, port), so attempts to one target reuse
a connection to the address vetted when it was opened; one idle past `keepalive_seconds`
or that the target closed is not used again. At most `max_connections` are open at
once, and as many attempts run at once (the others wait for a slot): opening one more
closes the longest idle one of another origin.

Why not httpx's pool: per attempt it walked every pooled connection, each asking its
socket whether it was readable through several layers (with 16 connections to one
target, two thirds of an attempt's CPU); here an attempt looks at one connection. URLs
are still parsed by httpx (and remembered: a subscription's URL repeats).
"""

from __future__ import annotations

import codecs
import functools
import math
import ssl
import time
from collections.abc import Collection
from typing import NamedTuple

import anyio
import httpx

from adapters.webhooks.guard import (
    PROGRESS,
    AttemptFailed,
    Guard,
    Progress,
    Resolver,
    system_resolver,
)
from adapters.webhooks.http1 import Answer, Connection, encode_request, exchange
from core.domain.addresses import Network
from core.ports import SendFailure, WebhookAnswer, WebhookRequest

__all__ = ["HttpWebhookSender"]

_CLOSE_GRACE_SECONDS = 1.0


class _Target(NamedTuple):
    origin: tuple[str, str, int]  # scheme, host (ASCII), port
    host_header: bytes
    path: bytes  # path and query


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> _Target | str:
    """Where a URL points, or why it cannot be sent to (the message of a refusal)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        return f"refused: not a valid URL: {error}"
    scheme = parsed.scheme
    if scheme not in ("http", "https") or not parsed.host:
        return "refused: webhooks go to http:// or https:// URLs"
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if scheme == "https" else 80)
    return _Target((scheme, host, port), parsed.netloc, parsed.raw_path)


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
        self.keepalive_seconds = keepalive_seconds
        self._guard = Guard(self.allowed_networks, resolver)
        self._ssl = ssl_context or httpx.create_ssl_context(trust_env=False)
        #: idle connections per origin, the most recently used last
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._open = 0  # connections open or being opened
        self._slots: anyio.Semaphore | None = None

    async def send(self, request: WebhookRequest) -> WebhookAnswer:
        timeout = request.timeout_seconds
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout_seconds must be a positive number, not {timeout!r}")
        target = _target(request.url)
        if isinstance(target, str):
            return _failed("refused", target, 0.0)
        if target.origin[0] == "http" and self.require_https:
            return _failed("refused", "refused: http:// URL where https is required", 0.0)
        outgoing = encode_request(target.path, target.host_header, request.headers, request.body)
        if self._slots is None:
            self._slots = anyio.Semaphore(self.max_connections)
        async with self._slots:
            return await self._attempt(target, outgoing, timeout)

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await self._discard(connection)

    async def _attempt(self, target: _Target, outgoing: bytes, seconds: float) -> WebhookAnswer:
        started = time.perf_counter()
        progress = Progress()
        token = PROGRESS.set(progress)
        connection: Connection | None = None
        answer = Answer(self.excerpt_bytes)
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
                try:
                    connection = await self._connection(target)
                    reusable = await exchange(connection, outgoing, answer)
                except AttemptFailed as failed:
                    return _failed(failed.failure, str(failed), _since(started))
                if reusable and self.keepalive_seconds > 0:
                    connection.until = time.monotonic() + self.keepalive_seconds
                    self._idle.setdefault(target.origin, []).append(connection)
                    connection = None
            if scope.cancelled_caught and not answer.head:  # an answer whose body stalls stands
                message = f"no answer within {seconds:g} s ({progress.phase})"
                return _failed("timeout", message, _since(started))
        finally:
            PROGRESS.reset(token)
            if connection is not None:  # not handed back: closed, whatever happened
                await self._discard(connection)
        return WebhookAnswer(
            status_code=answer.status,
            duration_ms=_since(started),
            retry_after=_header(answer.headers, b"retry-after"),
            excerpt=codecs.getincrementaldecoder("utf-8")("replace").decode(
                bytes(answer.body), final=False
            ),
        )

    async def _connection(self, target: _Target) -> Connection:
        """A kept-alive connection to the target's origin, or a new one."""
        idle = self._idle.get(target.origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.stale(now):
                return connection
            await self._discard(connection)
        while self._open >= self.max_connections:  # an attempt holds no connection yet, so
            oldest = self._oldest_idle()  # at least one of them is idle
            if oldest is None:
                break
            self._idle[oldest.origin].remove(oldest)
            await self._discard(oldest)
        self._open += 1
        try:
            scheme, host, port = target.origin
            tls = self._ssl if scheme == "https" else None
            stream, sock = await self._guard.connect(host, port, tls)
        except BaseException:
            self._open -= 1
            raise
        return Connection(target.origin, stream, sock)

    def _oldest_idle(self) -> Connection | None:
        oldest: Connection | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].until < oldest.until):
                oldest = connections[0]
        return oldest

    async def _discard(self, connection: Connection) -> None:
        self._open -= 1
        with anyio.move_on_after(_CLOSE_GRACE_SECONDS, shield=True):
            await connection.close()


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _failed(failure: SendFailure, error: str, duration_ms: float) -> WebhookAnswer:
    return WebhookAnswer(status_code=None, duration_ms=duration_ms, failure=failure, error=error)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
