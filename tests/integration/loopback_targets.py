"""Real webhook targets on loopback for tests: HTTP/1.1 servers (TLS optional) that record
every connection and request they get and answer as told.

A target listens on 127.0.0.1 and, when the machine has it, on [::1] at the same port,
so that a test can prove that nothing connected to it whichever address was tried.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "Received", "Target", "loopback_target"]


@dataclass(frozen=True)
class Received:
    """One request as the target read it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    server_name: str | None  # the TLS SNI the client sent (None: plain HTTP or no SNI)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"ok"
    delay_seconds: float = 0.0  # before the status line


@dataclass
class Target:
    """What a running target got; `answer` decides how it answers (swap it at will)."""

    port: int
    scheme: str
    answer: Callable[[Received], Answer] = lambda _: Answer()
    connections: int = 0  # accepted TCP connections
    requests: list[Received] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def accepted(self) -> None:
        with self.lock:
            self.connections += 1

    def opened(self) -> None:
        with self.lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)

    def closed(self) -> None:
        with self.lock:
            self.open_now -= 1


def _handler(target: Target) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so that pooling shows

        def setup(self) -> None:
            super().setup()
            target.opened()

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                target.closed()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            server_name = getattr(self.connection, "waypost_server_name", None)
            received = Received(
                self.command, self.path, list(self.headers.items()), body, server_name
            )
            with target.lock:
                target.requests.append(received)
            answer = target.answer(received)
            if answer.delay_seconds:
                time.sleep(answer.delay_seconds)
            try:
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                self.close_connection = True  # the client went away: fine

        do_GET = do_POST  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        family: socket.AddressFamily,
        tls: ssl.SSLContext | None,
        target: Target,
    ) -> None:
        self.address_family = family
        self.target = target
        self.tls = tls
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        self.target.accepted()  # counted at TCP accept, before TLS or any byte
        if self.tls is None:
            return sock, address
        # the handshake happens in the handler's thread, on its first read
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


def _sni_recorder(context: ssl.SSLContext) -> ssl.SSLContext:
    def record(sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        sslobj.waypost_server_name = name  # type: ignore[union-attr]

    context.sni_callback = record
    return context


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@contextmanager
def loopback_target(tls: ssl.SSLContext | None = None) -> Iterator[Target]:
    """A target on 127.0.0.1 (and [::1], same port, when there is IPv6 loopback)."""
    handler_target = Target(port=0, scheme="https" if tls else "http")
    handler = _handler(handler_target)
    if tls is not None:
        tls = _sni_recorder(tls)
    for _ in range(20):  # find a port free on both families
        servers = [_Server(("127.0.0.1", 0), handler, socket.AF_INET, tls, handler_target)]
        port = servers[0].server_address[1]
        if _ipv6_loopback():
            try:
                servers.append(
                    _Server(("::1", port), handler, socket.AF_INET6, tls, handler_target)
                )
            except OSError:
                servers[0].server_close()
                continue
        break
    else:  # pragma: no cover - the machine is out of ports
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")
    handler_target.port = port
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for s in servers
    ]
    for thread in threads:
        thread.start()
    try:
        yield handler_target
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
