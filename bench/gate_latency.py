"""Gate latency: from the completing event's 201 to the waiter knowing, over many trials.

    python bench/gate_latency.py [--backends sqlite,postgres] [--trials 100] [--cli-trials 20]

For each backend, a real `waypost serve` process; in each trial a fresh artifact
(NVRPP), one member event recorded, a waiter started, then the completing event
sent; the latency is from the start of that POST to the waiter returning (so the
POST's own round trip is in it). Waiters:

1. `Client.wait_for_gate` (the SDK's long poll) in a thread of this process;
2. `waypostctl gate wait` as a subprocess (what a pipeline runs; started and parked
   before the event, so its start-up is not counted but its exit is);
3. the reference: the hand-written loop pipelines had, `GET .../status` every
   second until complete (what the long poll replaces).

Also printed: the size of the client installed with its dependencies in a fresh
virtual environment (`pip install ./client`), against a bare httpx install.
Load is one waiter at a time, loopback only, bounded by the trial counts.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from waypost_client import Client, Nvrpp

from bench.harness import credential, free_port, serving
from tests.servers import running_postgres

WAYPOSTCTL = str(pathlib.Path(sys.executable).with_name("waypostctl"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(name: str, latencies: list[float]) -> None:
    ms = [1000 * v for v in latencies]
    print(
        f"  {name:<34} n={len(ms):<4} p50 {percentile(ms, 0.5):7.1f} ms   "
        f"p99 {percentile(ms, 0.99):7.1f} ms   max {max(ms):7.1f} ms   "
        f"mean {statistics.fmean(ms):7.1f} ms"
    )


class Gate:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.build = client.create_receiver("build", "ci.build", "1")
        self.test = client.create_receiver("test", "ci.test", "1")
        self.group = client.create_group("release", "gate", "1", [self.build, self.test])

    def artifact(self) -> Nvrpp:
        key = Nvrpp("app", uuid.uuid4().hex[:12], "1", "linux", "rpm")
        self.record(key, self.build)
        return key

    def record(self, key: Nvrpp, receiver: str) -> None:
        self.client.create_events([{**key.params(), "event_receiver_id": receiver,
                                    "success": True}])  # fmt: skip


def sdk_trial(gate: Gate, url: str, api_key: str) -> float:
    key = gate.artifact()
    done: list[float] = []
    with Client(url, api_key) as waiter:

        def wait() -> None:
            waiter.wait_for_gate(gate.group, key, timeout=60)
            done.append(time.perf_counter())

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.3)  # parked in its long poll
        recorded = time.perf_counter()
        gate.record(key, gate.test)
        thread.join(60)
    return done[0] - recorded


def cli_trial(gate: Gate, url: str, api_key: str) -> float:
    key = gate.artifact()
    env = {**os.environ, "WAYPOST_URL": url, "WAYPOST_API_KEY": api_key}
    args = [WAYPOSTCTL, "gate", "wait", "--group", gate.group, "--timeout", "60s",
            "--name", key.name, "--version", key.version, "--release", key.release,
            "--platform-id", key.platform_id, "--package", key.package]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    time.sleep(1.5)  # started and parked in its long poll
    recorded = time.perf_counter()
    gate.record(key, gate.test)
    code = process.wait(60)
    returned = time.perf_counter()
    assert code == 0, code
    return returned - recorded


def polling_trial(gate: Gate, url: str, api_key: str, every: float = 1.0) -> float:
    key = gate.artifact()
    done: list[float] = []
    with Client(url, api_key) as waiter:

        def poll() -> None:
            while not waiter.group_status(gate.group, key).complete:
                time.sleep(every)
            done.append(time.perf_counter())

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.3 + (uuid.uuid4().int % 1000) / 1000)  # anywhere in its cycle
        recorded = time.perf_counter()
        gate.record(key, gate.test)
        thread.join(60)
    return done[0] - recorded


def install_size() -> None:
    """Bytes a fresh venv gains from `pip install ./client`, and from `pip install httpx`."""
    sizes = {}
    for name, target in (("waypost-client", str(ROOT / "client")), ("httpx alone", "httpx")):
        with tempfile.TemporaryDirectory() as tmp:
            venv = pathlib.Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            site = next(venv.glob("lib/python*/site-packages"))
            before = _size(site)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", target], check=True,
                           capture_output=True)  # fmt: skip
            listing = [str(venv / "bin" / "pip"), "list", "--format=freeze"]
            packages = subprocess.run(listing, check=True, capture_output=True, text=True).stdout
            sizes[name] = (_size(site) - before, packages.split())
    for name, (size, packages) in sizes.items():
        print(f"  {name:<16} {size / 1e6:6.1f} MB installed: {' '.join(sorted(packages))}")


def _size(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_backend(backend: str, url_db: str, trials: int, cli_trials: int, poll_trials: int) -> None:
    env = {
        "WAYPOST__DATABASE__URL": url_db,
        "WAYPOST__LIMITS__REQUESTS_PER_SECOND": "10000",
        "WAYPOST__SECRETS__MASTER_KEY": "YmVuY2gtb25seS1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmch",
    }
    api_key = credential(env)
    port = free_port()
    argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)]
    with serving(argv, env, port) as (url, _), Client(url, api_key) as client:
        gate = Gate(client)
        print(f"{backend}:")
        report("SDK wait_for_gate (long poll)", [sdk_trial(gate, url, api_key)
                                                  for _ in range(trials)])  # fmt: skip
        if cli_trials:
            report("waypostctl gate wait (process)", [cli_trial(gate, url, api_key)
                                                       for _ in range(cli_trials)])  # fmt: skip
        if poll_trials:
            report("reference: GET status every 1 s", [polling_trial(gate, url, api_key)
                                                        for _ in range(poll_trials)])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--cli-trials", type=int, default=20)
    parser.add_argument("--poll-trials", type=int, default=20)
    parser.add_argument("--no-install-size", action="store_true")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "postgres":
                with running_postgres() as server:
                    run_backend(backend, server.url(), args.trials, args.cli_trials,
                                args.poll_trials)  # fmt: skip
            else:
                url_db = f"sqlite:///{tmp}/bench.db"
                run_backend(backend, url_db, args.trials, args.cli_trials, args.poll_trials)
    if not args.no_install_size:
        print("client install size (fresh venv):")
        install_size()


if __name__ == "__main__":
    main()
