"""The webhook sender against real targets on loopback: answers, failures, the TLS checks,
and the address guard at connection time (nothing refused is ever connected to).

The only test double is DNS: `resolving` makes a host name resolve to the addresses a
test needs (a name that resolves to loopback), because this machine has no DNS of its
own to configure. Every connection is real.
"""

from __future__ import annotations

import os
import resource
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from ipaddress import ip_address

import anyio
import pytest
import trustme

from adapters.webhooks import HttpWebhookSender, system_resolver
from core.domain.addresses import Address, parse_networks
from core.ports import WebhookAnswer, WebhookRequest, WebhookSender
from tests.integration.loopback_targets import Answer, Received, Target, loopback_target

pytestmark = pytest.mark.anyio

LOOPBACK = parse_networks(["127.0.0.0/8", "::1"])
HEADERS = [
    ("content-type", "application/cloudevents+json"),
    ("webhook-id", "01J0000000000000000000000A"),
    ("webhook-timestamp", "1700000000"),
    ("webhook-signature", "v1,c2lnbmF0dXJl"),
    ("user-agent", "Waypost/0.1.0"),
]
BODY = b'{"specversion":"1.0","id":"01J0000000000000000000000A"}'


def request(url: str, timeout: float = 10.0) -> WebhookRequest:
    return WebhookRequest(url=url, headers=HEADERS, body=BODY, timeout_seconds=timeout)


class Resolving:
    """A DNS test double: name -> the addresses of each successive lookup (the last repeats)."""

    def __init__(self, answers: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[Address]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        rounds = self.answers[host]
        index = min(self.lookups.count(host), len(rounds) - 1)
        self.lookups.append(host)
        return [ip_address(text) for text in rounds[index]]


@pytest.fixture
def target() -> Iterator[Target]:
    with loopback_target() as running:
        yield running


@pytest.fixture
def second_target() -> Iterator[Target]:
    with loopback_target() as running:
        yield running


@pytest.fixture
async def senders() -> AsyncIterator[list[HttpWebhookSender]]:
    made: list[HttpWebhookSender] = []
    yield made
    for sender in made:
        await sender.close()


Make = Callable[..., HttpWebhookSender]


@pytest.fixture
def make(senders: list[HttpWebhookSender]) -> Make:
    """Build a sender (closed at the end); loopback allowed and http accepted unless told."""

    def build(**options: object) -> HttpWebhookSender:
        options.setdefault("allowed_networks", LOOPBACK)
        options.setdefault("require_https", False)
        sender = HttpWebhookSender(**options)  # type: ignore[arg-type]
        senders.append(sender)
        return sender

    return build


def test_the_sender_is_a_webhook_sender() -> None:
    sender: WebhookSender = HttpWebhookSender()
    assert sender is not None


# --- answers --------------------------------------------------------------------------------


async def test_a_post_carries_exactly_the_given_headers_and_body(
    make: Make, target: Target
) -> None:
    answer = await make().send(request(target.url()))
    assert answer.status_code == 200
    assert answer.failure is None
    assert answer.error is None
    assert answer.excerpt == "ok"
    assert answer.duration_ms > 0
    [got] = target.requests
    assert (got.method, got.path, got.body) == ("POST", "/hook", BODY)
    # the given headers, in order, and only Host and Content-Length besides
    added = [(n, v) for n, v in got.headers if n in ("Host", "Content-Length")]
    assert sorted(added) == [
        ("Content-Length", str(len(BODY))),
        ("Host", f"127.0.0.1:{target.port}"),
    ]
    assert [(n, v) for n, v in got.headers if (n, v) not in added] == HEADERS


async def test_credentials_in_the_url_are_not_sent(make: Make, target: Target) -> None:
    url = f"http://someone:secret@127.0.0.1:{target.port}/hook"
    assert (await make().send(request(url))).status_code == 200
    [got] = target.requests
    assert not [name for name, _ in got.headers if name.lower() == "authorization"]


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        (201, None),
        (204, None),
        (400, None),
        (410, None),
        (429, "120"),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT"),
        (500, None),
    ],
)
async def test_status_codes_and_retry_after_are_passed_through(
    make: Make, target: Target, status: int, retry_after: str | None
) -> None:
    headers = [("Retry-After", retry_after)] if retry_after else []
    body = b"" if status == 204 else b"nope"
    target.answer = lambda _: Answer(status=status, headers=headers, body=body)
    answer = await make().send(request(target.url()))
    assert (answer.status_code, answer.retry_after, answer.failure) == (status, retry_after, None)
    assert answer.excerpt == body.decode()


def redirecting(location: str) -> Callable[[Received], Answer]:
    return lambda _: Answer(status=302, headers=[("Location", location)])


async def test_a_redirect_is_an_answer_and_is_never_followed(
    make: Make, target: Target, second_target: Target
) -> None:
    sender = make()
    for location in ("http://169.254.169.254/latest/meta-data/", second_target.url()):
        target.answer = redirecting(location)
        answer = await sender.send(request(target.url()))
        assert (answer.status_code, answer.failure) == (302, None)
    assert len(target.requests) == 2
    await anyio.sleep(0.2)
    assert second_target.connections == 0  # allowed, reachable, and never contacted


async def test_a_slow_target_times_out_saying_where(make: Make, target: Target) -> None:
    target.answer = lambda _: Answer(delay_seconds=5.0)
    answer = await make().send(request(target.url(), timeout=0.5))
    assert answer.status_code is None
    assert answer.failure == "timeout"
    assert answer.error == "no answer within 0.5 s (waiting for the answer)"
    assert 400 < answer.duration_ms < 4000  # generous: the machine is shared


async def test_the_timeout_covers_resolving_too(make: Make) -> None:
    async def hanging(host: str, port: int) -> Sequence[Address]:
        await anyio.sleep(30)
        raise AssertionError("not reached")

    answer = await make(resolver=hanging).send(request("http://hook.test/", timeout=0.3))
    assert answer.failure == "timeout"
    assert answer.error == "no answer within 0.3 s (resolving hook.test)"


async def test_a_cancelled_attempt_is_cancelled_not_answered(make: Make, target: Target) -> None:
    target.answer = lambda _: Answer(delay_seconds=3.0)
    result: list[WebhookAnswer] = []
    with anyio.move_on_after(0.3) as scope:
        result.append(await make().send(request(target.url(), timeout=10)))
    assert scope.cancelled_caught
    assert result == []


async def test_a_refused_connection_is_a_connect_failure(make: Make) -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    answer = await make().send(request(f"http://127.0.0.1:{port}/"))
    assert (answer.status_code, answer.failure) == (None, "connect")
    assert answer.error is not None
    assert answer.error.startswith(f"could not connect to 127.0.0.1:{port}: 127.0.0.1: ")
    assert "\n" not in answer.error


async def test_a_name_that_does_not_resolve_is_a_dns_failure(make: Make) -> None:
    answer = await make(resolver=Resolving({})).send(request("http://nowhere.test/"))
    assert answer.failure == "dns"
    assert answer.error == "could not resolve nowhere.test: [Errno -2] Name or service not known"


async def test_the_system_resolver_reads_the_hosts_file() -> None:
    assert ip_address("127.0.0.1") in await system_resolver("localhost", 80)


async def test_an_answer_that_is_not_http_is_a_protocol_failure(make: Make) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def garble() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SMTP ready\r\n\r\n")

        thread = threading.Thread(target=garble, daemon=True)
        thread.start()
        answer = await make().send(request(f"http://127.0.0.1:{port}/"))
        thread.join(5)
    assert answer.failure == "protocol"
    assert answer.error is not None
    assert answer.error.startswith("no valid HTTP answer: ")


# --- the HTTP/1.1 exchange, against targets that answer byte by byte as told ------------


class Scripted:
    """A raw TCP target: each accepted connection reads requests and plays the next script
    for each: bytes to send, a float (seconds to wait), None (close the connection)."""

    def __init__(self, listener: socket.socket, scripts: list[Script]) -> None:
        self.listener = listener
        self.scripts = scripts
        self.connections = 0
        self.requests = 0

    def serve(self) -> None:
        while self.scripts:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                self.play(connection)

    def play(self, connection: socket.socket) -> None:
        while self.scripts:
            try:
                if not connection.recv(65536):
                    return
            except OSError:
                return
            self.requests += 1
            for step in self.scripts.pop(0):
                if step is None:
                    return
                if isinstance(step, float):
                    time.sleep(step)
                    continue
                try:
                    connection.sendall(step)
                except OSError:  # the client closed it
                    return


Script = list[bytes | float | None]
Start = Callable[..., tuple[Scripted, str]]


@pytest.fixture
def scripted() -> Iterator[Start]:
    listeners: list[socket.socket] = []

    def start(*scripts: Script) -> tuple[Scripted, str]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listeners.append(listener)
        server = Scripted(listener, list(scripts))
        threading.Thread(target=server.serve, daemon=True).start()
        return server, f"http://127.0.0.1:{listener.getsockname()[1]}/hook"

    yield start
    for listener in listeners:
        listener.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_an_answer_whose_body_stalls_stands_with_what_came(
    make: Make, scripted: Start
) -> None:
    _, url = scripted(
        [b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 100\r\n\r\nwa", 3.0]
    )
    answer = await make().send(request(url, timeout=0.5))
    assert (answer.status_code, answer.retry_after, answer.excerpt) == (503, "7", "wa")
    assert answer.failure is None
    assert answer.duration_ms < 2500


async def test_interim_answers_are_skipped(make: Make, scripted: Start) -> None:
    server, url = scripted(
        [
            b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n",
            0.05,
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        ],
        [OK],
    )
    sender = make()
    first = await sender.send(request(url))
    assert (first.status_code, first.excerpt) == (202, "")
    assert (await sender.send(request(url))).status_code == 200
    assert server.connections == 1  # the interim answer left the connection usable


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # an answer nobody asked for
        b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 200,  # over the excerpt
    ],
    ids=["connection-close", "http-1.0", "extra-answer", "body-over-excerpt"],
)
async def test_a_connection_is_not_kept_after_an_answer_that_ends_it(
    make: Make, scripted: Start, answer: bytes
) -> None:
    server, url = scripted([answer, 0.3, b"x" * 1800], [OK])
    sender = make(excerpt_bytes=100)
    assert (await sender.send(request(url))).status_code == 200
    assert (await sender.send(request(url))).status_code == 200
    assert server.connections == 2


async def test_a_body_without_length_ends_with_the_connection(make: Make, scripted: Start) -> None:
    server, url = scripted([b"HTTP/1.1 500 Oops\r\n\r\nbody until close", None], [OK])
    sender = make()
    answer = await sender.send(request(url))
    assert (answer.status_code, answer.excerpt) == (500, "body until close")
    assert (await sender.send(request(url))).status_code == 200
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"", "the target closed the connection first"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "the target closed the connection first"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, "no end of headers in 65536 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "no valid HTTP answer: "),
    ],
    ids=["nothing", "headers-cut", "endless-headers", "bad-length"],
)
async def test_what_is_not_a_whole_answer_is_a_protocol_failure(
    make: Make, scripted: Start, answer: bytes, says: str
) -> None:
    _, url = scripted([answer])
    found = await make().send(request(url))
    assert (found.status_code, found.failure) == (None, "protocol")
    assert found.error is not None
    assert found.error.startswith("no valid HTTP answer: ")
    assert says in found.error


async def test_a_kept_connection_the_target_closed_is_not_used_again(
    make: Make, scripted: Start
) -> None:
    server, url = scripted([OK, None], [OK])
    sender = make()
    assert (await sender.send(request(url))).status_code == 200
    await anyio.sleep(0.2)  # the target closes its end of the idle connection
    assert (await sender.send(request(url))).status_code == 200
    assert server.connections == 2


@pytest.mark.parametrize(
    "header",
    [("bad name", "x"), ("x-inject", "a\r\nHost: evil"), ("Host", "evil"), ("content-length", "9")],
)
async def test_a_header_that_could_change_the_request_is_never_sent(
    make: Make, target: Target, header: tuple[str, str]
) -> None:
    with pytest.raises(ValueError, match="header"):
        await make().send(
            WebhookRequest(url=target.url(), headers=[header], body=BODY, timeout_seconds=5)
        )
    await anyio.sleep(0.1)
    assert target.connections == 0


# --- the excerpt ----------------------------------------------------------------------------


async def test_the_excerpt_is_bounded_and_the_rest_is_not_read(make: Make, target: Target) -> None:
    target.answer = lambda _: Answer(status=500, body=b"x" * 5_000_000)
    answer = await make(excerpt_bytes=100).send(request(target.url()))
    assert (answer.status_code, answer.excerpt) == (500, "x" * 100)


async def test_the_excerpt_is_decoded_leniently_and_never_ends_in_half_a_character(
    make: Make, target: Target
) -> None:
    sender = make(excerpt_bytes=6)
    target.answer = lambda _: Answer(body="abcdé€".encode())  # é is 2 bytes: the cut is in €
    assert (await sender.send(request(target.url()))).excerpt == "abcdé"
    target.answer = lambda _: Answer(body=b"a\xffb")
    assert (await sender.send(request(target.url()))).excerpt == "a\ufffdb"
    target.answer = lambda _: Answer(body=b"quiet")
    assert (await make(excerpt_bytes=0).send(request(target.url()))).excerpt == ""


# --- connections ----------------------------------------------------------------------------


async def test_attempts_to_one_target_reuse_a_connection(make: Make, target: Target) -> None:
    sender = make()
    for _ in range(5):
        assert (await sender.send(request(target.url()))).status_code == 200
    assert (len(target.requests), target.connections) == (5, 1)


async def test_a_connection_numbered_past_1024_is_reused(make: Make, target: Target) -> None:
    # a busy server holds many descriptors: select() cannot watch one past 1024, poll() can
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200 and hard >= 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    elif soft < 1200:
        pytest.skip("this process may not open 1,200 files")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        sender = make()
        for _ in range(3):
            assert (await sender.send(request(target.url()))).status_code == 200
    finally:
        for descriptor in held:
            os.close(descriptor)
    assert (len(target.requests), target.connections) == (3, 1)


async def test_connections_are_bounded_and_waiting_for_one_is_not_the_targets_time(
    make: Make, target: Target
) -> None:
    # one connection, three attempts of 1 s each with a 1.8 s timeout: waiting for the
    # connection (up to 2 s) would time them out if it counted; it does not
    target.answer = lambda _: Answer(delay_seconds=1.0)
    sender = make(max_connections=1)
    answers: list[WebhookAnswer] = []

    async def one() -> None:
        answers.append(await sender.send(request(target.url(), timeout=1.8)))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(one)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert target.most_open == 1


async def test_many_attempts_share_at_most_max_connections(make: Make, target: Target) -> None:
    target.answer = lambda _: Answer(delay_seconds=0.2)
    sender = make(max_connections=3)
    answers: list[WebhookAnswer] = []

    async def one() -> None:
        answers.append(await sender.send(request(target.url())))

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(one)
    assert [a.status_code for a in answers] == [200] * 12
    assert target.most_open <= 3
    assert target.connections <= 3  # and they were reused


async def test_opening_one_more_closes_an_idle_connection_of_another_target(
    make: Make, target: Target, second_target: Target
) -> None:
    sender = make(max_connections=1)
    assert (await sender.send(request(target.url()))).status_code == 200
    assert (await sender.send(request(second_target.url()))).status_code == 200
    await anyio.sleep(0.2)
    assert (target.open_now, second_target.open_now) == (0, 1)
    assert (await sender.send(request(second_target.url()))).status_code == 200
    assert second_target.connections == 1


async def test_proxy_environment_variables_are_ignored(
    make: Make, target: Target, second_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{second_target.port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert (await make().send(request(target.url()))).status_code == 200
    assert len(target.requests) == 1
    await anyio.sleep(0.2)
    assert second_target.connections == 0


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_target(authority: trustme.CA) -> Iterator[Target]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("hook.test").configure_cert(context)
    with loopback_target(tls=context) as running:
        yield running


def trusting(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


async def test_https_connects_to_the_vetted_address_and_checks_the_host_name(
    make: Make, tls_target: Target, authority: trustme.CA
) -> None:
    dns = Resolving({"hook.test": [["127.0.0.1"]]})
    sender = make(resolver=dns, ssl_context=trusting(authority), require_https=True)
    answer = await sender.send(request(tls_target.url("hook.test")))
    assert (answer.status_code, answer.failure) == (200, None)
    [got] = tls_target.requests
    assert got.server_name == "hook.test"  # SNI is the host name, not the address
    assert ("Host", f"hook.test:{tls_target.port}") in got.headers


async def test_attempts_over_tls_reuse_a_connection(
    make: Make, tls_target: Target, authority: trustme.CA
) -> None:
    # TLS 1.3 servers send session tickets after the handshake: a kept connection must not
    # look "readable" (closed by the target) because of them
    dns = Resolving({"hook.test": [["127.0.0.1"]]})
    sender = make(resolver=dns, ssl_context=trusting(authority), require_https=True)
    for _ in range(3):
        await anyio.sleep(0.05)
        assert (await sender.send(request(tls_target.url("hook.test")))).status_code == 200
    assert (len(tls_target.requests), tls_target.connections) == (3, 1)


@pytest.mark.parametrize("host", ["other.test", "127.0.0.1"])
async def test_a_certificate_for_another_name_is_a_tls_failure(
    make: Make, tls_target: Target, authority: trustme.CA, host: str
) -> None:
    dns = Resolving({"other.test": [["127.0.0.1"]]})
    sender = make(resolver=dns, ssl_context=trusting(authority))
    answer = await sender.send(request(tls_target.url(host)))
    assert (answer.status_code, answer.failure) == (None, "tls")
    assert answer.error is not None
    assert answer.error.startswith(f"TLS handshake with {host} failed: ")
    assert "match" in answer.error  # "Hostname mismatch" / "IP address mismatch"
    assert tls_target.requests == []


async def test_a_certificate_from_an_unknown_authority_is_a_tls_failure(
    make: Make, tls_target: Target
) -> None:
    dns = Resolving({"hook.test": [["127.0.0.1"]]})
    answer = await make(resolver=dns).send(request(tls_target.url("hook.test")))  # certifi's CAs
    assert answer.failure == "tls"
    assert "certificate verify failed" in (answer.error or "")


# --- the address guard ----------------------------------------------------------------------

GUARDED_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "2130706433",
    "0x7f.1",
    "127.1",
    "0.0.0.0",  # reaches this machine on Linux
    "loopback.test",  # resolves to 127.0.0.1 (the DNS test double)
    "loopback6.test",  # resolves to ::1
    "mixed.test",  # resolves to a public address and 127.0.0.1
]
DNS = {
    "loopback.test": [["127.0.0.1"]],
    "loopback6.test": [["::1"]],
    "mixed.test": [["93.184.215.14", "127.0.0.1"]],
}


def _with_system_names(dns: Resolving) -> Resolving:
    """`localhost` goes to the real system resolver: the brief's case is the real one."""

    async def resolve(host: str, port: int) -> Sequence[Address]:
        if host == "localhost":
            return await system_resolver(host, port)
        return await dns(host, port)

    return resolve  # type: ignore[return-value]


@pytest.mark.parametrize("host", GUARDED_HOSTS)
async def test_refused_targets_are_never_connected_to(
    make: Make, target: Target, host: str
) -> None:
    sender = make(allowed_networks=(), resolver=_with_system_names(Resolving(DNS)))
    answer = await sender.send(request(target.url(host)))
    assert (answer.status_code, answer.failure) == (None, "refused")
    assert answer.error is not None
    assert answer.error.startswith("refused: ")
    assert "not in an allowed network" in answer.error
    await anyio.sleep(0.2)  # time for the target to accept anything that was sent its way
    assert target.connections == 0  # no connection at all, on 127.0.0.1 or [::1]


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
async def test_the_target_counts_a_connection_that_sends_nothing(
    target: Target, family: socket.AddressFamily
) -> None:
    # what the test above relies on: a bare TCP connect shows
    with socket.socket(family) as probe:
        probe.connect(("127.0.0.1" if family == socket.AF_INET else "::1", target.port))
        await anyio.sleep(0.2)
    assert target.connections == 1


@pytest.mark.parametrize("host", [h for h in GUARDED_HOSTS if h not in ("mixed.test", "0.0.0.0")])
async def test_the_same_targets_pass_when_their_network_is_allowed(
    make: Make, target: Target, host: str
) -> None:
    sender = make(allowed_networks=LOOPBACK, resolver=_with_system_names(Resolving(DNS)))
    answer = await sender.send(request(target.url(host)))
    assert (answer.status_code, answer.failure) == (200, None)
    assert len(target.requests) == 1


async def test_refusal_says_what_the_name_resolved_to(make: Make, target: Target) -> None:
    sender = make(allowed_networks=(), resolver=Resolving(DNS))
    answer = await sender.send(request(target.url("loopback.test")))
    assert answer.error == (
        "refused: loopback.test resolves to 127.0.0.1, loopback (127.0.0.0/8), "
        "not in an allowed network"
    )
    answer = await sender.send(request(target.url("[::ffff:127.0.0.1]")))
    assert answer.error == (
        "refused: ::ffff:7f00:1, IPv4-mapped form of 127.0.0.1, loopback (127.0.0.0/8), "
        "not in an allowed network"
    )


async def test_the_address_connected_to_is_the_vetted_one_whatever_dns_says_next(
    make: Make, target: Target
) -> None:
    # DNS rebinding: the first lookup answers an allowed address, every later one the
    # metadata endpoint. The name is unknown to the system's resolver: had anything
    # looked it up again or connected by name, the attempt would have failed.
    dns = Resolving({"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]})
    sender = make(allowed_networks=parse_networks(["127.0.0.1/32"]), resolver=dns)
    for _ in range(3):
        answer = await sender.send(request(target.url("rebind.test")))
        assert (answer.status_code, answer.failure) == (200, None)
    assert dns.lookups == ["rebind.test"]  # one lookup, for the one connection
    assert (len(target.requests), target.connections) == (3, 1)


async def test_every_new_connection_is_vetted_again(make: Make, target: Target) -> None:
    dns = Resolving({"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]})
    sender = make(
        allowed_networks=parse_networks(["127.0.0.1/32"]), resolver=dns, keepalive_seconds=0
    )
    first = await sender.send(request(target.url("rebind.test")))
    second = await sender.send(request(target.url("rebind.test")))
    assert (first.status_code, second.failure) == (200, "refused")
    assert second.error is not None
    assert "rebind.test resolves to 169.254.169.254, link-local" in second.error
    assert (len(target.requests), target.connections) == (1, 1)


async def test_http_is_refused_where_https_is_required(make: Make, target: Target) -> None:
    answer = await make(require_https=True).send(request(target.url()))
    assert (answer.failure, answer.error) == (
        "refused",
        "refused: http:// URL where https is required",
    )
    await anyio.sleep(0.2)
    assert target.connections == 0


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "http://", "::"])
async def test_what_is_not_an_http_url_is_refused(make: Make, url: str) -> None:
    answer = await make().send(request(url))
    assert answer.failure == "refused"
    assert answer.status_code is None


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
async def test_a_timeout_that_is_not_a_positive_number_is_a_programming_error(
    make: Make, seconds: float
) -> None:
    with pytest.raises(ValueError, match="timeout_seconds"):
        await make().send(request("https://example.com/", timeout=seconds))


def test_the_constructor_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="excerpt_bytes"):
        HttpWebhookSender(excerpt_bytes=-1)
    with pytest.raises(ValueError, match="max_connections"):
        HttpWebhookSender(max_connections=0)
