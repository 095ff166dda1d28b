"""HTTP ingest benchmark: a real server process under load, against its references.

    python bench/http_load.py [--backends sqlite,postgres]
                              [--kinds single,single+key,batch100,batch1000]
                              [--seconds 10] [--connections 16] [--rounds 1]
                              [--baseline DIR] [--json PATH] [--processes 1,2]

For each backend and kind of request (one event; one event with an `Idempotency-Key`, a
new one per request: what the durable record costs; batches of 100 and 1000), in one run:
1. The *maximum* rate: closed loop, `--connections` clients sending back to back, and
   the server's CPU time per request (from /proc: it moves much less than throughput
   when other work shares the machine).
2. *Open loop* at 70% of that maximum: requests are scheduled at a fixed arrival
   rate, whatever the server does, and each latency is measured from the moment
   the request was scheduled, so queueing counts (no coordinated omission).
3. For single events, a *lone* client (1 connection, back to back): the latency of a
   request that finds the server idle.
With `--baseline DIR` (a checkout of another version, e.g. `git worktree add /tmp/before
main`), a server of that version runs beside this one on a database of its own, and the
two are measured turn about, `--rounds` times each (the median is reported): an A/B
comparison under the same machine state.
References, same run, same concurrency (`--connections` workers):
- the bare Litestar app (bench/bare_app.py) answering the same POSTs, served the same way;
- "same rows by hand": the raw driver writing the rows Waypost writes for these events,
  with the tenant's head lock (see bench/ingest.py); one transaction per request;
- "bare insert": the raw driver inserting each event's own row into a table with a
  primary key only.
On two or more CPUs the server gets one and this process (load generator and the
references) another, so that neither's scheduling is counted as the other's latency.

`--processes 1,2` adds a table: single events on PostgreSQL to `waypost serve --workers
N` for each N, in the same run, unpinned (the server processes share the CPUs with the
load generator, whose own CPU use is reported beside: on a 2-core box a second server
process competes with it). Load is bounded in count and time and goes to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import msgspec

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.system import UlidSource
from bench.harness import (
    Process,
    bare_server,
    closed_loop,
    credential,
    event,
    free_port,
    maker,
    no_collector_pauses,
    open_loop,
    pin_cpus,
    register_receiver,
    server_env,
    serving,
    waypost,
    waypost_server,
)
from bench.ingest import (  # the same raw drivers and rows as the ingest benchmark
    HandEvent,
    HandPostgres,
    HandSqlite,
    RawPostgres,
    RawSqlite,
)
from core.domain.commands import RecordEvent
from tests.servers import running_postgres

KINDS = {"single": 1, "single+key": 1, "batch100": 100, "batch1000": 1000}
RESULTS = ROOT / "bench" / "results"


async def measure(
    port: int, server: Process | None, make: Callable[[], bytes], per: int, args: argparse.Namespace
) -> dict[str, Any]:
    with no_collector_pauses():
        most = await closed_loop(port, make, args.connections, args.seconds, server)
    with no_collector_pauses():
        at70 = await open_loop(port, make, 0.7 * most.rate, args.seconds, args.connections * 4)
    result = {
        "max": most.rate,
        "events_per_second": most.rate * per,
        "cpu_us": most.cpu_us if most.cpu_us is not None else float("nan"),
        "p50": at70.p50,
        "p99": at70.p99,
        "errors": most.failed + at70.errors,
        "statuses": {
            str(status): most.statuses.get(status, 0) + at70.statuses.get(status, 0)
            for status in {*most.statuses, *at70.statuses}
        },
    }
    if per == 1:
        with no_collector_pauses():
            lone = await closed_loop(port, make, 1, args.seconds / 2, server)
        result.update(lone_p50=lone.p50, lone_p99=lone.p99, lone_rate=lone.rate)
    return result


def median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds; the failures' statuses, summed."""
    merged: dict[str, Any] = {
        key: statistics.median(r[key] for r in results) for key in results[0] if key != "statuses"
    }
    statuses: dict[str, int] = {}
    for r in results:
        for status, count in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    merged["statuses"] = statuses
    return merged


# --- the raw driver at the same concurrency -----------------------------------------------

Reference = RawSqlite | RawPostgres | HandSqlite | HandPostgres
References = tuple[
    Callable[[], RawSqlite | RawPostgres], Callable[[str, str], HandSqlite | HandPostgres]
]


async def reference_rate(
    ref: Reference, item: Callable[[], Any], batch: int, connections: int, seconds: float
) -> float:
    """Events per second of `connections` workers writing back to back through `ref`."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            if batch == 1:
                await ref.single(item())
            else:
                await ref.batch([item() for _ in range(batch)])
            done += batch

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.perf_counter() - start)


async def references(refs: References, per: int, args: argparse.Namespace) -> tuple[float, float]:
    """(bare insert ev/s, same rows by hand ev/s) for requests of `per` events, at the
    benchmark's concurrency."""
    ids, counter = UlidSource(), iter(range(10**9))
    tenant, receiver = "01JBENCHTENANT000000000000", "01JBENCHRECEIVER0000000000"

    def command() -> RecordEvent:
        return msgspec.convert(event(receiver, next(counter)), RecordEvent)

    def bare_row() -> tuple[Any, ...]:
        cmd = command()
        return (ids.new_id(), tenant, cmd.name, cmd.version, cmd.release, cmd.platform_id,
                cmd.package, cmd.description, msgspec.json.encode(cmd.payload).decode(), True,
                receiver, time.time())  # fmt: skip

    bare_at, hand_at = refs
    async with bare_at() as bare:
        bare_eps = await reference_rate(bare, bare_row, per, args.connections, args.seconds)
    async with hand_at(tenant, receiver) as hand:
        hand_eps = await reference_rate(
            hand, lambda: HandEvent(ids, tenant, command()), per, args.connections, args.seconds
        )
    return bare_eps, hand_eps


@contextmanager
def backend_for(
    name: str, workdir: pathlib.Path, connections: int
) -> Iterator[tuple[Callable[[], str], References]]:
    """A maker of fresh databases for the servers, and makers of the two references on
    databases of their own."""
    counter = iter(range(1000))
    if name == "sqlite":
        yield (
            lambda: f"sqlite:///{workdir / f'waypost{next(counter)}.db'}",
            (
                lambda: RawSqlite(str(workdir / f"bare{next(counter)}.db")),
                lambda tenant, receiver: HandSqlite(
                    str(workdir / f"hand{next(counter)}.db"), tenant, receiver
                ),
            ),
        )
        return
    with running_postgres() as server:
        yield (
            lambda: server.create_database(f"bench{next(counter)}"),
            (
                lambda: RawPostgres(server.create_database(f"bare{next(counter)}"), connections),
                lambda tenant, receiver: HandPostgres(
                    server.create_database(f"hand{next(counter)}"), tenant, receiver, connections
                ),
            ),
        )


# --- the run -------------------------------------------------------------------------------


async def run_backend(name: str, workdir: pathlib.Path, args: argparse.Namespace) -> list[dict]:
    trees = [("this", ROOT)]
    if args.baseline is not None:
        trees.append(("baseline", args.baseline))
    rows = []
    with backend_for(name, workdir, args.connections) as (database, refs), ExitStack() as stack:
        servers = {
            label: stack.enter_context(waypost_server(database(), tree=tree))
            for label, tree in trees
        }
        for kind in args.kinds:
            per = KINDS[kind]
            taken: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
            for _ in range(args.rounds):
                for label, (port, proc, key, receiver) in servers.items():
                    print(f"#   {name} {kind} {label} ...", file=sys.stderr, flush=True)
                    taken[label].append(
                        await measure(port, proc, make(kind, receiver, key), per, args)
                    )
            if kind == "single+key":
                port, _, key, receiver = servers["this"]
                print(f"#   {name} Idempotency-Key cost ...", file=sys.stderr, flush=True)
                costs[name] = await keyed_cost(port, receiver, key, args)
            bare_eps, hand_eps = await references(refs, per, args)
            for label, results in taken.items():
                rows.append(
                    {"server": f"Waypost {name}", "tree": label, "kind": kind, "per": per,
                     **median(results), "hand": hand_eps, "bare_insert": bare_eps}
                )  # fmt: skip
    return rows


def make(kind: str, receiver: str, key: str) -> Callable[[], bytes]:
    return maker(receiver, key, KINDS[kind], keyed=kind == "single+key")


async def keyed_cost(port: int, receiver: str, key: str, args: argparse.Namespace) -> float:
    """What a new Idempotency-Key per request costs single events: closed loops with and
    without, alternated (ABBA...) in short rounds on the same server, so that a machine
    whose load drifts (other work, a checkpoint) weighs on both alike. 1 - the median of
    each round's keyed/plain throughput."""
    ratios = []
    for n in range(6):
        got = {}
        for kind in ("single", "single+key") if n % 2 == 0 else ("single+key", "single"):
            with no_collector_pauses():
                got[kind] = await closed_loop(
                    port, make(kind, receiver, key), args.connections, max(1.0, args.seconds / 4)
                )
        ratios.append(got["single+key"].rate / got["single"].rate)
    return 1 - statistics.median(ratios)


#: The Idempotency-Key's cost per backend (`keyed_cost`), filled by `run_backend`.
costs: dict[str, float] = {}


async def run_bare(args: argparse.Namespace) -> list[dict]:
    rows = []
    with bare_server() as (port, proc):
        for kind in args.kinds:
            if kind == "single+key":
                continue  # the bare app ignores the header: the same as `single`
            per = KINDS[kind]
            print(f"#   bare Litestar {kind} ...", file=sys.stderr, flush=True)
            result = await measure(
                port, proc, make(kind, "01JBENCH000000000000000000", "-"), per, args
            )
            rows.append({"server": "bare Litestar", "tree": "", "kind": kind, "per": per, **result})
    return rows


def report(rows: list[dict]) -> str:
    bare = {row["kind"]: row["max"] for row in rows if row["server"] == "bare Litestar"}
    bare.setdefault("single+key", bare.get("single", float("nan")))
    lines = [
        "| server | request | max throughput | server CPU µs/req | p50 / p99 ms at 70% "
        "| lone p50 / p99 ms | vs bare Litestar | same rows by hand | ratio "
        "| bare insert | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per, kind = row["per"], row["kind"]
        server = row["server"] + (f" ({row['tree']})" if row["tree"] not in ("", "this") else "")
        lone = f"{row['lone_p50']:.2f} / {row['lone_p99']:.2f}" if "lone_p50" in row else ""
        vs_bare = row["max"] / bare[kind] if kind in bare else float("nan")
        target = " (>= 35%)" if per == 1 and row["server"] != "bare Litestar" else ""
        cells = [
            server,
            kind,
            f"{row['max']:,.0f} req/s ({row['events_per_second']:,.0f} ev/s)",
            f"{row['cpu_us']:,.0f}",
            f"{row['p50']:.1f} / {row['p99']:.1f}",
            lone,
            "" if row["server"] == "bare Litestar" else f"**{vs_bare:.0%}**{target}",
        ]
        if "hand" in row:
            eps = row["events_per_second"]
            batch_target = " (>= 35%)" if per > 1 else ""
            cells += [
                f"{row['hand']:,.0f} ev/s",
                f"{eps / row['hand']:.0%}",
                f"{row['bare_insert']:,.0f} ev/s",
                f"**{eps / row['bare_insert']:.0%}**{batch_target}",
            ]
        else:
            cells += ["", "", "", ""]
        errors = (
            f" {int(row['errors'])} errors (statuses {row['statuses']})" if row["errors"] else ""
        )
        lines.append("| " + " | ".join(cells) + " |" + errors)
    for name, cost in costs.items():
        lines.append(
            f"\nWaypost {name}: an Idempotency-Key costs **{cost:.0%}** of single-event "
            "throughput (target <= 15%; median of 6 alternated rounds)"
        )
    return "\n".join(lines)


async def run_processes(counts: list[int], args: argparse.Namespace) -> list[str]:
    """Single events on PostgreSQL to `serve --workers N`, for each N, same database kind."""
    lines = [
        "| server processes | request | max throughput | load generator CPU |",
        "|---:|---|---:|---:|",
    ]
    with running_postgres() as server:
        for count in counts:
            env = server_env(
                server.create_database(f"procs{count}"), waypost({}, "secrets", "new-master-key")
            )
            env["WAYPOST__DATABASE__POOL_SIZE"] = str(max(4, args.connections // count))
            waypost(env, "migrate")
            key = credential(env)
            port = free_port()
            argv = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port),
                    "--workers", str(count)]  # fmt: skip
            with serving(argv, env, port, pin=False) as (url, _):
                await asyncio.sleep(2 * count)  # every worker up, not only the first
                requests = maker(register_receiver(url, key), key, 1)
                with no_collector_pauses():
                    cpu, wall = time.process_time(), time.perf_counter()
                    most = await closed_loop(port, requests, args.connections, args.seconds)
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            lines.append(
                f"| {count} | single | {most.rate:,.0f} req/s | {cpu / wall:.0%} of one CPU |"
            )
    return lines


def save(args: argparse.Namespace, rows: list[dict]) -> pathlib.Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(args.json) if args.json else RESULTS / f"http-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"args": {**vars(args), "baseline": str(args.baseline)}, "rows": rows}, indent=2)
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--kinds", default="single,single+key,batch100,batch1000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="measurements per server (median)")
    parser.add_argument("--baseline", help="a checkout of another version, measured beside")
    parser.add_argument("--json", help=f"where to write the results (default: under {RESULTS})")
    parser.add_argument(
        "--processes",
        default="",
        help="e.g. 1,2: also single events on PostgreSQL to that many server processes",
    )
    args = parser.parse_args()
    if args.baseline is not None:
        args.baseline = pathlib.Path(args.baseline).resolve()
    args.kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
    print(f"# {pin_cpus()}", file=sys.stderr)
    rows = asyncio.run(run(args))
    path = save(args, rows)
    print(report(rows))
    counts = [int(n) for n in args.processes.split(",") if n.strip()]
    if counts:
        print("# server processes (unpinned) ...", file=sys.stderr, flush=True)
        print()
        print("\n".join(asyncio.run(run_processes(counts, args))))
    print(f"\n(results: {path})")


async def run(args: argparse.Namespace) -> list[dict]:
    rows = await run_bare(args)
    with tempfile.TemporaryDirectory(prefix="waypost-http-bench-") as tmp:
        for name in args.backends.split(","):
            print(f"# {name} ...", file=sys.stderr, flush=True)
            rows += await run_backend(name, pathlib.Path(tmp), args)
    return rows


if __name__ == "__main__":
    main()
