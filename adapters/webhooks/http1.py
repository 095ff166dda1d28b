"""One HTTP/1.1 exchange on a kept-alive connection: the request written in one piece,
the answer parsed by httptools (llhttp, the parser uvicorn serves with).

Only what a webhook attempt needs: a POST with a body, the answer's status and
headers, at most `limit` bytes of its body. A connection is handed back for the next
attempt only when the answer ended cleanly within what was read and the target keeps
it alive; anything else (an answer cut short, a body longer than the excerpt, bytes
after the answer, `Connection: close`, an upgrade) closes it.
"""

from __future__ import annotations

import re
import select
import socket
from collections.abc import Sequence

import anyio
import anyio.abc
import httptools

from adapters.webhooks.guard import AttemptFailed

__all__ = ["Answer", "Connection", "encode_request", "exchange"]

#: Most bytes an answer's status line and headers may take.
MAX_HEAD_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
#: Headers the exchange writes itself.
_OWN = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def encode_request(
    target: bytes, host: bytes, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    """A POST of `body` to `target` (path and query) at `host` (the Host header): the given
    headers, then Host and Content-Length. A header name that is not a token, or a value
    with a control character, is a programming error (ValueError), never sent."""
    lines = [b"POST ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or name.lower() in _OWN:
            raise ValueError(f"not a header a webhook may carry: {name!r}")
        if not _VALUE.fullmatch(value):
            raise ValueError(f"the value of the header {name!r} has a control character")
        lines += (name.encode("ascii"), b": ", value.encode("ascii"), b"\r\n")
    lines += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n\r\n", body)
    return b"".join(lines)


class Connection:
    """A connection to one origin: its stream, its socket, and when it stops being kept."""

    __slots__ = ("origin", "socket", "stream", "until")

    def __init__(
        self, origin: tuple[str, str, int], stream: anyio.abc.ByteStream, sock: socket.socket
    ) -> None:
        self.origin = origin
        self.stream = stream
        self.socket = sock
        self.until = 0.0  # monotonic: kept idle until then

    def stale(self, now: float) -> bool:
        """Past its keep-alive, or readable while idle: the target closed it (or sent what
        nobody asked for); either way not for another request."""
        if now >= self.until:
            return True
        poller = select.poll()  # not select(): a process may hold descriptors past 1024
        try:
            poller.register(self.socket, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    async def close(self) -> None:
        await anyio.aclose_forcefully(self.stream)


class Answer:
    """The final answer as the parser sees it (httptools calls the `on_*` methods); 1xx
    interim answers are skipped."""

    __slots__ = (
        "body",
        "complete",
        "extra",
        "head",
        "headers",
        "keep_alive",
        "limit",
        "parser",
        "status",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.head = False  # the final answer's status line and headers are in
        self.complete = False  # the whole final answer is in
        self.extra = False  # bytes of another message followed it
        self.keep_alive = False  # the target keeps the connection open after it

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True
        else:
            self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.complete:
            status = self.parser.get_status_code()
            self.head = status >= 200 or status == 101
            self.status = status if self.head else 0

    def on_body(self, chunk: bytes) -> None:
        room = self.limit - len(self.body)
        if room > 0 and not self.complete:
            self.body += chunk[:room]

    def on_message_complete(self) -> None:
        if self.head and not self.complete:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()  # reset once the call returns


async def exchange(connection: Connection, request: bytes, answer: Answer) -> bool:
    """Write `request`, read `answer` (its body up to its limit): whether the connection may
    carry another request. Raises AttemptFailed("protocol") when no valid answer comes;
    cancellation (the attempt's deadline) passes through, `answer` holding what came."""
    stream = connection.stream
    try:
        await stream.send(request)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
        broken = _broken("the connection broke while sending", error)
        raise AttemptFailed("protocol", broken) from None
    limit = answer.limit
    read = 0
    while True:
        try:
            data = await stream.receive(_READ_BYTES)
        except anyio.EndOfStream:
            if answer.head:
                return False  # the body ended with the connection: it stands
            raise AttemptFailed(
                "protocol", "no valid HTTP answer: the target closed the connection first"
            ) from None
        except (anyio.BrokenResourceError, OSError) as error:
            if answer.head:
                return False
            raise AttemptFailed("protocol", _broken("no valid HTTP answer", error)) from None
        read += len(data)
        try:
            answer.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            return False  # 101 Switching Protocols: an answer, not a connection to keep
        except httptools.HttpParserError as error:
            if answer.complete:
                return False  # garbage after the answer: the answer stands
            raise AttemptFailed("protocol", _broken("no valid HTTP answer", error)) from None
        if answer.complete:
            return answer.keep_alive and not answer.extra
        if not answer.head and read > MAX_HEAD_BYTES:
            raise AttemptFailed(
                "protocol", f"no valid HTTP answer: no end of headers in {MAX_HEAD_BYTES} bytes"
            )
        if answer.head and len(answer.body) >= limit:
            return False  # the excerpt is full: the rest is not read


def _broken(what: str, error: BaseException) -> str:
    cause = error.__cause__ or error
    text = " ".join(str(cause).split()) or type(cause).__name__
    return f"{what}: {text}"
