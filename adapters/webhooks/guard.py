"""The address guard at connection time: resolve, vet, and connect to a vetted address,
never to a name.

`Guard.connect` resolves the URL's host itself (or reads it as a literal address, as
resolvers read `2130706433`), refuses the whole target when any address it resolves to
is refused (core/domain/addresses.py: a name that answers both a public and a private
address is how rebinding attacks hedge), and connects to the vetted addresses in turn.
The socket is made to an address, so a second resolution (DNS rebinding) can never
change where it goes; TLS then runs over it with the host name as SNI and for the
certificate check.

Failures leave as `AttemptFailed` with the kind of the `WebhookSender` port (refused,
dns, connect, tls) and one line for people.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextvars import ContextVar

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from core.domain.addresses import Address, Network, literal_address, refusal
from core.ports import SendFailure

__all__ = [
    "AttemptFailed",
    "Guard",
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


class Guard:
    """Connects only to addresses that `core.domain.addresses.refusal` lets pass."""

    def __init__(self, allowed: Collection[Network], resolver: Resolver) -> None:
        self._allowed = tuple(allowed)
        self._resolver = resolver

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

    async def connect(
        self, host: str, port: int, tls: ssl.SSLContext | None
    ) -> tuple[anyio.abc.ByteStream, socket.socket]:
        """A stream to a vetted address of `host` (TLS over it with `host` as the name to
        check, when `tls` is given), and its socket."""
        errors: list[str] = []
        for address in await self.vetted(host, port):
            _at(f"connecting to {address}:{port}")
            try:
                plain = await anyio.connect_tcp(str(address), port)
            except OSError as error:
                errors.append(f"{address}: {_one_line(error)}")
                continue
            raw: socket.socket = plain.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 - anyio, not Django
            if tls is None:
                _at("waiting for the answer")
                return plain, raw
            _at(f"TLS handshake with {host}")
            try:
                secure = await TLSStream.wrap(
                    plain, hostname=host, ssl_context=tls, standard_compatible=False
                )
            except (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream) as error:
                await anyio.aclose_forcefully(plain)
                cause = error.__cause__ if isinstance(error, anyio.BrokenResourceError) else error
                raise AttemptFailed(
                    "tls", f"TLS handshake with {host} failed: {_one_line(cause or error)}"
                ) from None
            _at("waiting for the answer")
            return secure, raw
        raise AttemptFailed("connect", f"could not connect to {host}:{port}: {'; '.join(errors)}")
