"""Webhook sender benchmark: what the address guard costs per attempt, against a bare httpx.

    python bench/webhook_sender.py [--attempts 2000] [--concurrency 16] [--rounds 3]

One loopback target (a minimal HTTP/1.1 keep-alive server in a process of its own,
on its own CPU when there are two) answers 200 at once. The same body and headers
(a CloudEvent of ~1 KiB, the Standard Webhooks headers) are POSTed by:
- "bare httpx": `httpx.AsyncClient(trust_env=False)`, the reference;
- "guarded": `adapters.webhooks.HttpWebhookSender` (loopback allowed), which resolves,
  vets and connects to a vetted address, reads a bounded excerpt, and classifies.
Each in four ways: one attempt at a time over a pooled connection (latency per
attempt), `--concurrency` at a time (attempts/s), and a new connection per attempt
to `localhost` (resolution and the guard's vetting on every attempt), serial and
concurrent. Rounds alternate the two clients; the table gives the median round.
Besides wall-clock rates and latencies, the client process's CPU time per attempt
(`time.process_time`): the guard's cost is CPU work in this process, and CPU time
says it even when other processes load the machine and stretch the wall clock.
Also the pure rule alone (`core.domain.addresses.refusal`), per address.
Load goes to loopback only and is bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_address

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.webhooks import HttpWebhookSender
from core.domain.addresses import parse_networks, refusal
from core.ports import WebhookRequest

BODY = b'{"specversion":"1.0","type":"ci.build","data":"' + b"x" * 1000 + b'"}'
HEADERS = [
    ("content-type", "application/cloudevents+json"),
    ("webhook-id", "01J0000000000000000000000A"),
    ("webhook-timestamp", "1700000000"),
    ("webhook-signature", "v1,c2lnbmF0dXJlIHNpZ25hdHVyZSBzaWduYXR1cmUgc2lnbmF0dXJl"),
    ("user-agent", "Waypost/bench"),
]

TARGET = r"""
import asyncio, sys

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def start_target() -> tuple[subprocess.Popen[str], int, str]:
    """The target process and its port; pinned to a CPU of its own when there are two."""
    process = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(process.pid, {cpus[0]})
        os.sched_setaffinity(0, {cpus[1]})
        return process, port, f"target on CPU {cpus[0]}, clients on CPU {cpus[1]}"
    return process, port, "one CPU: target and clients share it"


Send = Callable[[str], Awaitable[int | None]]


def bare(pooled: bool, connections: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections if pooled else 0,
    )
    client = httpx.AsyncClient(trust_env=False, limits=limits, follow_redirects=False)

    async def send(url: str) -> int | None:
        answer = await client.post(url, content=BODY, headers=HEADERS, timeout=10)
        return answer.status_code

    return send, client.aclose


def guarded(pooled: bool, connections: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    sender = HttpWebhookSender(
        allowed_networks=parse_networks(["127.0.0.0/8", "::1"]),
        require_https=False,
        max_connections=connections,
        keepalive_seconds=5.0 if pooled else 0.0,
    )

    async def send(url: str) -> int | None:
        answer = await sender.send(
            WebhookRequest(url=url, headers=HEADERS, body=BODY, timeout_seconds=10)
        )
        return answer.status_code

    return send, sender.close


async def run(
    make: Callable[[bool, int], tuple[Send, Callable[[], Awaitable[None]]]],
    url: str,
    *,
    pooled: bool,
    attempts: int,
    concurrency: int,
) -> tuple[float, float, list[float]]:
    """(attempts per second, CPU us per attempt, latencies in ms) of `attempts` sends,
    `concurrency` at a time."""
    send, close = make(pooled, concurrency)
    try:
        for _ in range(min(50, attempts)):  # warm up: connections, imports, caches
            assert await send(url) == 200
        latencies: list[float] = []
        queue = iter(range(attempts))

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                status = await send(url)
                latencies.append((time.perf_counter() - started) * 1000)
                assert status == 200, status

        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        await close()
    return attempts / elapsed, cpu / attempts * 1e6, latencies


def pure_rule_microseconds(count: int = 200_000) -> float:
    allowed = parse_networks(["127.0.0.0/8", "::1"])
    addresses = [ip_address(a) for a in ("93.184.215.14", "2606:4700::1111", "127.0.0.1")]
    began = time.perf_counter()
    for n in range(count):
        refusal(addresses[n % 3], allowed)
    return (time.perf_counter() - began) / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    process, port, placement = start_target()
    try:
        print(f"webhook sender benchmark ({placement}); {options.attempts} attempts per cell")
        print(f"pure rule (refusal): {pure_rule_microseconds():.2f} us per address")
        cases = [
            ("pooled, 1 at a time", f"http://127.0.0.1:{port}/hook", True, 1),
            (
                f"pooled, {options.concurrency} at a time",
                f"http://127.0.0.1:{port}/hook",
                True,
                options.concurrency,
            ),
            ("new connection to localhost, 1 at a time", f"http://localhost:{port}/hook", False, 1),
            (
                f"new connection to localhost, {options.concurrency} at a time",
                f"http://localhost:{port}/hook",
                False,
                options.concurrency,
            ),
        ]
        header = (
            f"{'case':<44} {'client':<11} {'attempts/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'CPU us':>8}"
        )
        print(header)
        print("-" * len(header))
        for name, url, pooled, concurrency in cases:
            results: dict[str, list[tuple[float, float, float, float]]] = {
                "bare httpx": [],
                "guarded": [],
            }
            for _ in range(options.rounds):
                for client, make in (("bare httpx", bare), ("guarded", guarded)):
                    rate, cpu, latencies = await run(
                        make, url, pooled=pooled, attempts=options.attempts, concurrency=concurrency
                    )
                    latencies.sort()
                    p99 = latencies[int(len(latencies) * 0.99) - 1]
                    results[client].append((rate, statistics.median(latencies), p99, cpu))
            medians = {}
            for client, rounds in results.items():
                median = len(rounds) // 2
                rate = sorted(r[0] for r in rounds)[median]
                p50 = sorted(r[1] for r in rounds)[median]
                p99 = sorted(r[2] for r in rounds)[median]
                cpu = sorted(r[3] for r in rounds)[median]
                medians[client] = (rate, p50, cpu)
                print(f"{name:<44} {client:<11} {rate:>10.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>8.0f}")
            (bare_rate, bare_p50, bare_cpu), (guard_rate, guard_p50, guard_cpu) = medians.values()
            print(
                f"{'':<44} {'guarded-bare':<12} {guard_rate / bare_rate:>8.2f}x"
                f" {(guard_p50 - bare_p50) * 1000:>+6.0f}us {'':>8} {guard_cpu - bare_cpu:>+6.0f}us"
            )
    finally:
        process.terminate()
        process.wait(5)


if __name__ == "__main__":
    asyncio.run(main())
