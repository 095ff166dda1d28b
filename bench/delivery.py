"""Delivery benchmark: webhooks per second, lag, and redrive, against a bare httpx client.

    python bench/delivery.py [--backends sqlite,postgres] [--deliveries 5000]
                             [--redrive 10000] [--lag-seconds 10]

For each backend, with `waypost worker` processes delivering to a loopback target that
answers 200 at once (a raw asyncio server in a process of its own):
- throughput: `--deliveries` messages recorded first, then one worker (and, on a fresh
  database, two) started; deliveries per second from the first arrival to the last
  (dispatch, claim, sign, send, record: all of it);
- lag: events recorded at half the one-worker rate for `--lag-seconds`, one worker
  delivering; p50 and p99 of the time from each message's commit (its CloudEvent
  `time`) to its arrival at the target;
- redrive: `--redrive` dead deliveries sent again (`POST .../redrive` through the use
  case), timed from the request to the last arrival.

The reference, in the same run: a bare httpx client posting the same body to the same
target, as many at once as a worker attempts for one subscription (8): what the HTTP
alone costs a general purpose client; and the registry's own sender doing the same,
alone (what a worker's HTTP costs, without claiming, signing or recording).

The machine is shared: numbers taken while others load it are provisional.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx
import uvloop

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from adapters.sql.migrations import migrate
from adapters.webhooks import HttpWebhookSender
from core.domain.addresses import parse_networks
from core.domain.commands import (
    CreateSubscription,
    CreateTenant,
    RecordEvent,
    Redrive,
    RegisterReceiver,
)
from core.domain.delivery import Attempt, DeliveryStatus
from core.ports import AppendMeta, Outcome, WebhookRequest
from core.usecases import Actor, Dispatcher, Services
from entrypoints.bootstrap import open_services
from entrypoints.settings import load_settings
from tests.servers import running_postgres

MASTER_KEY = "YmVuY2gtb25seS1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmchIQ"
#: Attempts at once per worker: the defaults (delivery.concurrency 32, of which 24 for first
#: attempts; subscription_concurrency 8, the bench's one subscription's cap).
CONCURRENCY = 8
BATCH = 1000
ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the target: a raw asyncio HTTP/1.1 server that answers 200 at once ----------------------

_TIME = re.compile(rb'"time":"([^"]+)"')


class _Hook(asyncio.Protocol):
    stats: ClassVar[dict[str, Any]] = {"count": 0, "first": 0.0, "last": 0.0, "lags": []}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self._answer(head.split(" ", 2), body)

    def _answer(self, request: list[str], body: bytes) -> None:
        method, path = request[0], request[1]
        stats = self.stats
        payload = b""
        if method == "POST" and path == "/hook":
            now = time.time()
            stats["count"] += 1
            stats["first"] = stats["first"] or now
            stats["last"] = now
            if stats.get("lag"):
                found = _TIME.search(body)
                if found:
                    sent = datetime.fromisoformat(found.group(1).decode()).timestamp()
                    stats["lags"].append(now - sent)
        elif path == "/stats":
            payload = json.dumps({k: v for k, v in stats.items() if k != "lags"}).encode()
        elif path == "/lags":
            payload = json.dumps(stats["lags"]).encode()
        elif path.startswith("/reset"):
            stats.update(count=0, first=0.0, last=0.0, lags=[], lag="lag" in path)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)
        )


def run_target(port: int) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Hook, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


@contextmanager
def target() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "target", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                _CLIENT.get(f"{base}/stats")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait()


_CLIENT = httpx.Client(timeout=30)  # one: each new client loads the CA bundle again


def stats(base: str) -> dict[str, Any]:
    found: dict[str, Any] = _CLIENT.get(f"{base}/stats").json()
    return found


def reset(base: str, *, lag: bool = False) -> None:
    _CLIENT.get(f"{base}/reset{'-lag' if lag else ''}")


def wait_count(base: str, count: int, seconds: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        found = stats(base)
        if found["count"] >= count:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {found['count']} of {count} deliveries arrived")
        time.sleep(0.1)


# --- the reference --------------------------------------------------------------------------------


async def bare_httpx(base: str, body: bytes, count: int) -> float:
    """Requests per second of a bare httpx client posting `body`, CONCURRENCY at once."""
    reset(base)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        queue = iter(range(count))

        async def one() -> None:
            for _ in queue:
                answer = await client.post(
                    f"{base}/hook",
                    content=body,
                    headers={"content-type": "application/cloudevents+json"},
                )
                assert answer.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
        return count / (time.perf_counter() - started)


async def sender_alone(base: str, body: bytes, count: int) -> float:
    """Requests per second of the registry's own sender (address guard included), alone."""
    reset(base)
    sender = HttpWebhookSender(
        allowed_networks=parse_networks(["127.0.0.0/8"]),
        require_https=False,
        max_connections=CONCURRENCY,
    )
    request = WebhookRequest(
        url=f"{base}/hook",
        headers=[("content-type", "application/cloudevents+json")],
        body=body,
        timeout_seconds=30,
    )
    queue = iter(range(count))

    async def one() -> None:
        for _ in queue:
            answer = await sender.send(request)
            assert answer.status_code == 200, answer

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    took = time.perf_counter() - started
    await sender.close()
    return count / took


# --- Waypost -----------------------------------------------------------------------------------


def env_for(url: str) -> dict[str, str]:
    return {
        "WAYPOST__DATABASE__URL": url,
        "WAYPOST__SECRETS__MASTER_KEY": MASTER_KEY,
        "WAYPOST__DELIVERY__ALLOWED_NETWORKS": "127.0.0.0/8",
        "WAYPOST__DELIVERY__REQUIRE_HTTPS": "false",
        "WAYPOST__DELIVERY__POLL_SECONDS": "0.05",
        "WAYPOST__LOG__LEVEL": "WARNING",
    }


@contextmanager
def workers(url: str, count: int, logs: pathlib.Path) -> Iterator[None]:
    procs = []
    files = []
    for n in range(count):
        out = (logs / f"worker-{n}-{time.monotonic_ns()}.log").open("wb")
        files.append(out)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "entrypoints.cli", "worker"],
                env={**os.environ, **env_for(url)},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        )
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, out in zip(procs, files, strict=True):
            proc.wait(60)
            out.close()


@dataclass
class World:
    services: Services
    actor: Actor
    receiver_id: str
    subscription_id: str = ""
    recorded: int = field(default=0)

    async def record(self, count: int) -> None:
        events = self.services.events
        while count > 0:
            n = min(BATCH, count)
            await events.record_batch(
                self.actor,
                [
                    RecordEvent(
                        name="app",
                        version="1.0",
                        release=str(self.recorded + i),
                        platform_id="x86_64",
                        package="rpm",
                        payload={"build": self.recorded + i},
                        success=True,
                        event_receiver_id=self.receiver_id,
                    )
                    for i in range(n)
                ],
            )
            self.recorded += n
            count -= n


@asynccontextmanager
async def world(url: str, hook: str) -> AsyncIterator[World]:
    await migrate(url)
    settings = load_settings(env_for(url))
    async with open_services(settings) as services:
        tenant = await services.tenants.create(
            CreateTenant(slug="bench", name="Bench"), AppendMeta(actor="bench")
        )
        actor = Actor(tenant_id=tenant.id, principal="bench")
        receiver, _ = await services.receivers.register(
            actor, RegisterReceiver(name="build", type="ci.build", version="1", schema={})
        )
        made = World(services, actor, receiver.id)
        subscription = await services.subscriptions.create(
            actor, CreateSubscription(name="bench", url=f"{hook}/hook")
        )
        made.subscription_id = subscription.id
        yield made


async def throughput(url: str, hook: str, workdir: pathlib.Path, n: int, count: int) -> float:
    async with world(url, hook) as w:
        await w.record(count)
    reset(hook)
    with workers(url, n, workdir):
        found = wait_count(hook, count)
    return count / max(1e-9, found["last"] - found["first"])


async def lag(
    url: str, hook: str, workdir: pathlib.Path, rate: float, seconds: float
) -> tuple[float, float, int]:
    async with world(url, hook) as w:
        reset(hook, lag=True)
        with workers(url, 1, workdir):
            await asyncio.sleep(3)  # the worker starts
            total = int(rate * seconds)
            started = time.monotonic()
            for i in range(total):
                await w.record(1)
                pause = started + (i + 1) / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            wait_count(hook, total)
        lags = (await asyncio.to_thread(_CLIENT.get, f"{hook}/lags")).json()
    quantiles = statistics.quantiles(lags, n=100, method="inclusive")
    return statistics.median(lags), quantiles[98], len(lags)


async def redrive(url: str, hook: str, workdir: pathlib.Path, count: int) -> float:
    async with world(url, hook) as w:
        await w.record(count)
        delivery = w.services.delivery_deps
        assert delivery is not None
        deps = w.services.deps
        await Dispatcher(deps, delivery, w.services.messages, name="bench").dispatch_once()
        store = delivery.store
        now = deps.clock.now()
        killed = 0
        while True:  # every delivery dies, without a request: the redrive's starting point
            claimed = await store.claim(
                claim=f"bench:{killed}",
                now=now + timedelta(seconds=1),
                lease_until=now + timedelta(minutes=5),
                limit=1000,
                retries=False,
                room=1000,
                rooms={},
                ordering_since=now,
            )
            if not claimed:
                break
            for one in claimed:
                await store.finish(
                    one.delivery.id,
                    one.claim,
                    Outcome(
                        attempt=Attempt(
                            delivery_id=one.delivery.id,
                            number=1,
                            started_at=now,
                            duration_ms=1.0,
                            status_code=500,
                            error="HTTP 500",
                        ),
                        status=DeliveryStatus.DEAD,
                        next_attempt_at=None,
                        failing=False,
                    ),
                )
                killed += 1
        reset(hook)
        with workers(url, 1, workdir):
            await asyncio.sleep(3)  # the worker starts
            started = time.time()
            requeued = await w.services.subscriptions.redrive(w.actor, w.subscription_id, Redrive())
            found = wait_count(hook, requeued)
    assert requeued == killed, (requeued, killed)
    return found["last"] - started


@asynccontextmanager
async def databases(name: str, workdir: pathlib.Path) -> AsyncIterator[Iterator[str]]:
    if name == "sqlite":

        def files() -> Iterator[str]:
            n = 0
            while True:
                n += 1
                yield f"sqlite:///{workdir / f'bench-{n}.db'}"

        yield files()
        return
    with running_postgres() as server:

        def fresh() -> Iterator[str]:
            n = 0
            while True:
                n += 1
                yield server.create_database(f"bench{n}")

        yield fresh()


async def run_backend(name: str, args: argparse.Namespace, hook: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="waypost-bench-delivery-") as tmp:
        workdir = pathlib.Path(tmp)
        async with databases(name, workdir) as urls:
            print(f"# {name}: one worker ...", file=sys.stderr, flush=True)
            one = await throughput(next(urls), hook, workdir, 1, args.deliveries)
            print(f"#   {one:,.0f}/s", file=sys.stderr, flush=True)
            print(f"# {name}: two workers ...", file=sys.stderr, flush=True)
            two = await throughput(next(urls), hook, workdir, 2, args.deliveries)
            print(f"#   {two:,.0f}/s", file=sys.stderr, flush=True)
            print(f"# {name}: lag at {one / 2:.0f}/s ...", file=sys.stderr, flush=True)
            p50, p99, n = await lag(next(urls), hook, workdir, one / 2, args.lag_seconds)
            print(f"# {name}: redrive of {args.redrive} ...", file=sys.stderr, flush=True)
            took = await redrive(next(urls), hook, workdir, args.redrive)
    return [
        f"| {name} | {one:,.0f} | {two:,.0f} ({two / 2:,.0f} per worker) | "
        f"{one / 2:,.0f}/s, {n} messages: {p50 * 1000:.0f} / {p99 * 1000:.0f} ms | "
        f"{args.redrive:,} in {took:.1f} s |"
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--redrive", type=int, default=10_000)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = []
    with target() as hook:
        sample = b'{"specversion":"1.0","id":"01JNZ3NDEKTSV4RRFFQ69G5FAV","type":"ci.build",' + (
            b'"data":{"events":[{"payload":{"build":1}}]},"pad":"' + b"x" * 900 + b'"}'
        )
        print("# bare httpx ...", file=sys.stderr, flush=True)
        bare = await bare_httpx(hook, sample, args.deliveries)
        print("# the registry's sender alone ...", file=sys.stderr, flush=True)
        alone = await sender_alone(hook, sample, args.deliveries)
        for name in args.backends.split(","):
            rows += await run_backend(name, args, hook)
    print(
        "| backend | deliveries/s, one worker | two workers | lag commit -> delivered p50 / p99 "
        "(at half the one-worker rate) | redrive |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"\nReference: a bare httpx client posting a 1 KiB body to the same target, "
        f"{CONCURRENCY} at once: {bare:,.0f} requests/s; the registry's own sender (address "
        f"guard included), alone, the same way: {alone:,.0f} requests/s."
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "target":
        run_target(int(sys.argv[2]))
    else:
        asyncio.run(main())
