"""Tracing's cost on single-event ingest: the same server process with tracing off, on
(every trace kept), and on with sampling at 0 (trace ids made, nothing recorded).

    python bench/tracing.py [--seconds 10] [--connections 16]

Each mode is a real `waypost serve` on a fresh SQLite database, loaded like the HTTP
benchmark (bench/http_load.py: the maximum rate in a closed loop, then an open loop at 70%
of it for the latencies). With tracing on, spans go by OTLP/HTTP to a collector stand-in in
this process (it accepts every POST and counts the bytes), so the export is paid as it
would be. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (
    closed_loop,
    credential,
    free_port,
    maker,
    no_collector_pauses,
    open_loop,
    pin_cpus,
    register_receiver,
    serving,
)


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts everything (a collector's stand-in)."""

    received = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        Collector.received += len(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


async def run_mode(name: str, extra: dict[str, str], args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as work:
        env = {
            "WAYPOST__DATABASE__URL": f"sqlite:///{work}/waypost.db",
            # the load is one credential: its rate limit would be measured instead
            "WAYPOST__LIMITS__REQUESTS_PER_SECOND": "1000000",
            "WAYPOST__LIMITS__BURST": "1000000",
            **extra,
        }
        key = credential(env)
        port = free_port()
        argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)]
        with serving(argv, env, port) as (url, _):
            make = maker(register_receiver(url, key), key, 1)
            with no_collector_pauses():
                most = await closed_loop(port, make, args.connections, args.seconds)
            with no_collector_pauses():
                at70 = await open_loop(
                    port, make, 0.7 * most.rate, args.seconds, args.connections * 4
                )
    return (
        f"| {name:<28} | {most.rate:>9,.0f} | {at70.rate:>9,.0f} | "
        f"{at70.p50:>6.2f} | {at70.p99:>7.2f} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(f"# {pin_cpus()}")
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    rows = [
        "| single-event ingest (SQLite)  | max ev/s  | 70% ev/s  | p50 ms | p99 ms  |",
        "|------------------------------|-----------|-----------|--------|---------|",
    ]
    modes = {
        "tracing off": {},
        "tracing on, every trace": {"WAYPOST__TRACING__OTLP_ENDPOINT": endpoint},
        "tracing on, sampled at 0": {
            "WAYPOST__TRACING__OTLP_ENDPOINT": endpoint,
            "WAYPOST__TRACING__SAMPLE_RATIO": "0",
        },
    }
    for name, extra in modes.items():
        rows.append(await run_mode(name, extra, args))
        print(rows[-1], flush=True)
    sink.shutdown()
    print()
    print("\n".join(rows))
    print(f"\n# spans exported: {Collector.received:,} bytes of OTLP protobuf")


if __name__ == "__main__":
    asyncio.run(main())
