"""Instructions per request of a real server process, counted by callgrind: a measure of
CPU cost that other work on the machine does not move.

    python bench/instructions.py [--backends sqlite,postgres] [--connections 1,16]
                                 [--requests 600] [--per 1] [--baseline DIR] [--keep DIR]

Each server (the bare Litestar app, this checkout's `waypost serve`, and with
`--baseline DIR` another checkout's) runs under `valgrind --tool=callgrind` with
counting off; after a warm-up, counting is switched on (`callgrind_control -i on`) for
`--requests` requests from `--connections` clients sending back to back, and off again.
The total counted in the server process (every thread) over the requests is the figure.
Throughput on one CPU is about proportional to its inverse, so "bare / this" estimates
the share of the bare framework's requests per second a server reaches, without the
noise of a shared machine. The kernel's work (system calls) is not counted.

Under callgrind a server runs some 50 times slower, so time-based caches expire
that much more often per request: the identity cache's life (1 s) is stretched to an
hour here (bench/_serve_callgrind.py), as it would be relative to the requests at
full speed. Needs valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (
    closed_loop,
    credential,
    exchange,
    free_port,
    maker,
    register_receiver,
    server_env,
    waypost,
)
from tests.servers import running_postgres

LAUNCHER = ROOT / "bench" / "_serve_callgrind.py"
BARE = "bare Litestar"


def _totals(folder: pathlib.Path) -> int:
    total = 0
    for path in folder.glob("callgrind.*"):
        found = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)
        if found:
            total += int(found[1])
    return total


def _control(pid: int, switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(pid)], check=True, capture_output=True)


@contextlib.contextmanager
def _under_callgrind(
    argv: list[str], env: dict[str, str], cwd: pathlib.Path, port: int, out: pathlib.Path
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out}/callgrind.%p", *argv],
        env={**os.environ, "PYTHONPATH": str(cwd), **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz/live", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv} did not start under callgrind") from None
                time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _count(
    proc: subprocess.Popen[bytes], port: int, make: object, args: argparse.Namespace, c: int
) -> None:
    assert callable(make)
    await closed_loop(port, make, c, min(20.0, args.warmup))  # warm up: caches, statements
    _control(proc.pid, "on")
    sent = 0

    async def client() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while sent < args.requests:
            sent += 1
            status = await exchange(reader, writer, make())
            if status not in (200, 201):
                raise RuntimeError(f"the server answered {status}")
        writer.close()

    await asyncio.gather(*(client() for _ in range(c)))
    _control(proc.pid, "off")


def measure(
    label: str, db_url: str | None, tree: pathlib.Path, c: int, args: argparse.Namespace
) -> float:
    """Thousands of instructions per request of one server."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="waypost-callgrind-") as tmp:
        out = pathlib.Path(tmp)
        if db_url is None:  # the bare app
            argv = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
                    "--no-access-log", "--log-level", "warning"]  # fmt: skip
            env: dict[str, str] = {}
            cwd, key = ROOT, "unused"
        else:
            env = server_env(db_url, waypost({}, "secrets", "new-master-key", tree=tree))
            waypost(env, "migrate", tree=tree)
            key = credential(env, tree)
            argv = [sys.executable, str(LAUNCHER), "serve", "--port", str(port)]
            cwd = tree
        with _under_callgrind(argv, env, cwd, port, out) as proc:
            receiver = (
                "01JBENCH000000000000000000"
                if db_url is None
                else register_receiver(f"http://127.0.0.1:{port}", key)
            )
            asyncio.run(_count(proc, port, maker(receiver, key, args.per), args, c))
        per_request = _totals(out) / args.requests / 1000
        if args.keep:  # for callgrind_annotate: where the instructions go, by C function
            kept = pathlib.Path(args.keep) / label.replace(" ", "-")
            shutil.copytree(out, kept, dirs_exist_ok=True)
    print(f"#   {label}, {c} connection(s): {per_request:,.0f}k", file=sys.stderr, flush=True)
    return per_request


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--per", type=int, default=1, help="events per request (1: singles)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of warm-up")
    parser.add_argument("--baseline", help="a checkout of another version, counted beside")
    parser.add_argument("--keep", help="a folder to keep the callgrind files in, by server")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind and callgrind_control (apt-get install valgrind)")
    connections = [int(c) for c in args.connections.split(",")]
    trees = [("this", ROOT)]
    if args.baseline:
        trees.append(("baseline", pathlib.Path(args.baseline).resolve()))
    rows: list[tuple[str, str, int, float]] = []
    bare = {c: measure(BARE, None, ROOT, c, args) for c in connections}
    for backend in args.backends.split(","):
        with contextlib.ExitStack() as stack:
            if backend == "postgres":
                server = stack.enter_context(running_postgres())
                url = server.create_database
            else:
                tmp = stack.enter_context(tempfile.TemporaryDirectory())
                url = lambda name, tmp=tmp: f"sqlite:///{tmp}/{name}.db"  # noqa: E731
            for c in connections:
                for label, tree in trees:
                    name = f"{label}{c}"
                    count = measure(f"{backend} {label}", url(name), tree, c, args)
                    rows.append((backend, label, c, count))
    lines = [
        f"| server | connections | k instructions / request ({args.per} event(s)) "
        "| bare / this (≈ share of the bare app's requests/s) | vs baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {BARE} | {c} | {bare[c]:,.0f} | | |" for c in connections]
    for backend, label, c, count in rows:
        base = next((r[3] for r in rows if r[:1] == (backend,) and r[1:3] == ("baseline", c)), None)
        versus = "" if base is None or label == "baseline" else f"{count / base - 1:+.1%}"
        name = f"Waypost {backend}" + (" (baseline)" if label == "baseline" else "")
        lines.append(f"| {name} | {c} | {count:,.0f} | {bare[c] / count:.0%} | {versus} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
