"""The address guard at connection time: an httpcore network backend that resolves, vets
and connects to a vetted address, never to a name.

httpcore asks its network backend to `connect_tcp(host, port)` with the URL's host and
then runs TLS on the stream with that same host name as SNI and for the certificate
check. `GuardedBackend.connect_tcp` resolves the host itself (or reads it as a literal
address, as resolvers read `2130706433`), refuses the whole target when any address
it resolves to is refused (core/domain/addresses.py: a name that answers both a public
and a private address is how rebinding attacks hedge), and connects to the vetted
addresses in turn. The socket is made to an address, so a second resolution (DNS
rebinding) can never change where it goes; TLS is unchanged and still checks the
certificate against the host name.

Failures leave as `AttemptFailed` with the kind of the `WebhookSender` port (refused,
dns, connect, tls) and one line for people: httpcore passes exceptions it does not know
through unchanged, where its own would lose their cause on the way out of the pool.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from contextvars import ContextVar
from typing import Any

import anyio
import httpcore

from core.domain.addresses import Address, Network, literal_address, refusal
from core.ports import SendFailure

__all__ = [
    "AttemptFailed",
    "GuardedBackend",
    "Progress",
    "Resolver",
    "system_resolver",
]

#: Resolves a host name for a port to its addresses, in the order to try them.
#: Raises OSError (socket.gaierror included) or UnicodeError when the name does not resolve.
Resolver = Callable[[str, int], Awaitable[Sequence[Address]]]


class AttemptFailed(Exception):
    """An attempt got no HTTP answer: `failure` says why, the message says it for people."""

    def __init__(self, failure: SendFailure, message: str) -> None:
        super().__init__(message)
        self.failure: SendFailure = failure


class Progress:
    """Where one attempt is, for the line that says where it timed out."""

    __slots__ = ("phase",)

    def __init__(self) -> None:
        self.phase = "waiting for the answer"


#: The attempt the running task is making (set by the sender around each attempt).
PROGRESS: ContextVar[Progress | None] = ContextVar("webhook_attempt_progress", default=None)


def _at(phase: str) -> None:
    progress = PROGRESS.get()
    if progress is not None:
        progress.phase = phase


async def system_resolver(host: str, port: int) -> Sequence[Address]:
    """The system's resolver (getaddrinfo, /etc/hosts included), run off the event loop."""
    answers = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        address = literal_address(str(sockaddr[0]))
        if address is not None and address not in found:
            found.append(address)
    return found


def _dialable(address: Address) -> Address:
    """The address to open a socket to: an IPv4-mapped address is the IPv4 address."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses that `core.domain.addresses.refusal` lets pass."""

    def __init__(self, allowed: Collection[Network], resolver: Resolver) -> None:
        self._allowed = tuple(allowed)
        self._resolver = resolver
        self._sockets = httpcore.AnyIOBackend()

    async def vetted(self, host: str, port: int) -> list[Address]:
        """The addresses `host` may be reached at (raises AttemptFailed: refused or dns)."""
        literal = literal_address(host)
        if literal is not None:
            addresses: Sequence[Address] = [literal]
        else:
            _at(f"resolving {host}")
            try:
                addresses = await self._resolver(host, port)
            except OSError as error:
                raise AttemptFailed(
                    "dns", f"could not resolve {host}: {_one_line(error)}"
                ) from None
            if not addresses:
                raise AttemptFailed("dns", f"could not resolve {host}: no address")
        for address in addresses:
            reason = refusal(address, self._allowed)
            if reason is not None:
                named = str(address) if literal is not None else f"{host} resolves to {address}"
                raise AttemptFailed(
                    "refused", f"refused: {named}, {reason}, not in an allowed network"
                )
        return list(dict.fromkeys(_dialable(address) for address in addresses))

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        errors: list[str] = []
        for address in await self.vetted(host, port):
            _at(f"connecting to {address}:{port}")
            try:
                stream = await self._sockets.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as error:
                errors.append(f"{address}: {_one_line(error)}")
                continue
            _at("waiting for the answer")
            return _GuardedStream(stream, host)
        raise AttemptFailed("connect", f"could not connect to {host}:{port}: {'; '.join(errors)}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AttemptFailed("refused", "refused: webhooks go over TCP, not to local sockets")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _GuardedStream(httpcore.AsyncNetworkStream):
    """A connected stream whose TLS handshake failures say so (`tls`)."""

    __slots__ = ("_host", "_stream")

    def __init__(self, stream: httpcore.AsyncNetworkStream, host: str) -> None:
        self._stream = stream
        self._host = host

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        name = server_hostname or self._host
        _at(f"TLS handshake with {name}")
        try:
            stream = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        except httpcore.ConnectError as error:
            cause = error.__cause__ or error
            raise AttemptFailed(
                "tls", f"TLS handshake with {name} failed: {_one_line(cause)}"
            ) from None
        _at("waiting for the answer")
        return _GuardedStream(stream, self._host)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
