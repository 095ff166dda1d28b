"""Console benchmark: the server time of an events page (50 rows, HTML) with 1M events stored.

    python bench/console_events.py [--events 1000000] [--db PATH] [--requests 200]

Fills a SQLite database (through the use cases, in 1000-event batches; `--db` keeps it
for the next run) and then times, in one process, the whole server side of a request
(the ASGI app: session cookie opened, access token checked, permission, use case,
template rendered) with no network in between:

- `/console/events`: the first page, newest first;
- `/console/events?cursor=...`: a page deep in the list (the 10,000th event on), as
  infinite scrolling asks for it;
- `/console/events?name=...` and `?success=false&since=...&until=...`: filtered pages;

against three references in the same run:
- `GET /api/v1/events?limit=50` (the same page as JSON through the API: the framework,
  authentication and the store without the template);
- `Events.list` alone (the use case and the store);
- the raw driver (stdlib sqlite3) running the same keyset query on the same file.

Numbers are p50 / p95 / p99 in milliseconds. On a machine that others load they are
provisional.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from core.domain.commands import RecordEvent, RegisterReceiver
from core.ports import EventFilter, PageRequest
from core.usecases import Actor, RequestContext, Services
from entrypoints.bootstrap import create_app
from entrypoints.http.auth import SERVICES_KEY
from entrypoints.settings import DatabaseSettings, Settings
from tests.http.console import ORIGIN, Console

BATCH = 1000
NAMES = 1000  # distinct artifact names: a name filter matches 1 event in NAMES


def command(receiver: str, i: int) -> RecordEvent:
    return RecordEvent(
        name=f"app-{i % NAMES}",
        version=f"{i // NAMES}.0",
        release="1",
        platform_id="linux-x86_64",
        package="oci",
        description="",
        payload={"build": i},
        success=i % 10 != 0,
        event_receiver_id=receiver,
    )


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100)
    return f"p50 {q[49]:7.2f}  p95 {q[94]:7.2f}  p99 {q[98]:7.2f} ms"


async def timed(count: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(10):  # warm up (caches, compiled statements)
        await call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _stored(db: pathlib.Path) -> int:
    with sqlite3.connect(db) as counting:
        found: int = counting.execute("select count(*) from events").fetchone()[0]
    return found


def _remember(path: pathlib.Path, key: str | None) -> str:
    """The tenant's key, made on the database's first run and read on the next ones."""
    if key is not None:
        path.write_text(key)
        return key
    return path.read_text()


async def _tenant_key(http: httpx.AsyncClient, bootstrap: list[str]) -> str | None:
    """A new tenant's admin key on a new database (None when the database is reused)."""
    if not bootstrap:
        return None
    platform = {"Authorization": f"Bearer {bootstrap[0]}"}
    await http.post("/api/v1/tenants", json={"slug": "bench", "name": "Bench"}, headers=platform)
    made = await http.post(
        "/api/v1/api-keys",
        json={"name": "bench", "role": "admin"},
        headers={**platform, "X-Tenant": "bench"},
    )
    key: str = made.json()["data"]["key"]
    return key


async def _fill(services: Services, actor: Actor, total: int, have: int) -> None:
    receiver, _ = await services.receivers.register(
        actor,
        RegisterReceiver(name="build", type="ci.build", version="1", schema={"type": "object"}),
    )
    started = time.perf_counter()
    for start in range(have, total, BATCH):
        n = min(BATCH, total - start)
        await services.events.record_batch(
            actor, [command(receiver.id, start + i) for i in range(n)]
        )
        if (start // BATCH) % 100 == 0:
            print(f"  filled {start + n} events", flush=True)
    if total > have:
        print(f"filled {total - have} events in {time.perf_counter() - started:.0f} s")


async def _deep_cursor(console: Console) -> str:
    """The events page 200 pages (10,000 events) down, as infinite scrolling reaches it."""
    deep = "/console/events"
    for _ in range(200):
        page = await console.get(deep)
        more = re.search(r'hx-get="([^"]+)"', page.text)
        assert more is not None
        deep = more.group(1).replace("&amp;", "&").replace("&rows=1", "")
    return deep


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", type=pathlib.Path, default=None, help="keep the database here")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    db = args.db or pathlib.Path(tempfile.mkdtemp(prefix="waypost-console-bench-")) / "w.db"
    bootstrap: list[str] = []
    app = create_app(
        Settings(database=DatabaseSettings(url=f"sqlite:///{db}")), announce=bootstrap.append
    )
    async with app.lifespan():
        services: Services = app.state[SERVICES_KEY]
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as http:
            tenant_key = _remember(
                pathlib.Path(f"{db}.bench-key"), await _tenant_key(http, bootstrap)
            )
            access = await services.identity.authenticate(tenant_key, tenant=None, ctx=_ctx())
            actor = access.actor()
            have = _stored(db)
            await _fill(services, actor, args.events, have)
            console = Console(http)
            answer = await console.sign_in(api_key=tenant_key)
            assert answer.status_code == 303, answer.text
            deep = await _deep_cursor(console)
            newest = (await services.events.list(actor, EventFilter(), PageRequest(limit=1)))[0]
            since = (newest.created_at - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
            until = newest.created_at.strftime("%Y-%m-%dT%H:%M:%S")
            api = {"Authorization": f"Bearer {tenant_key}"}

            async def get(path: str) -> None:
                got = await console.get(path)
                assert got.status_code == 200, got.text[:300]
                assert got.text.count("<tr") >= 2

            raw = sqlite3.connect(db)

            async def raw_page() -> None:
                raw.execute(
                    "select * from events where tenant_id = ? order by id desc limit 51",
                    (actor.tenant_id,),
                ).fetchall()

            filtered = f"/console/events?success=false&since={since}&until={until}"
            cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("console /events (first page)", lambda: get("/console/events")),
                ("console /events (deep cursor)", lambda: get(deep)),
                ("console /events?name= (1 in 1000)", lambda: get("/console/events?name=app-7")),
                ("console /events?success=false&since&until", lambda: get(filtered)),
                ("rows only (htmx) deep", lambda: get(deep + "&rows=1")),
                (
                    "API GET /api/v1/events?limit=50",
                    lambda: http.get("/api/v1/events?limit=50", headers=api),
                ),
                (
                    "use case Events.list(51)",
                    lambda: services.events.list(actor, EventFilter(), PageRequest(limit=51)),
                ),
                (
                    "use case Events.list(51, name=)",
                    lambda: services.events.list(
                        actor, EventFilter(name="app-7"), PageRequest(limit=51)
                    ),
                ),
                ("raw sqlite3 keyset query (51 rows)", raw_page),
            ]
            stored = max(have, args.events)
            print(f"\n{stored} events stored; {args.requests} requests each (in process)")
            for label, call in cases:
                print(f"  {label:45s} {summary(await timed(args.requests, call))}")


def _ctx() -> RequestContext:
    return RequestContext()


if __name__ == "__main__":
    asyncio.run(main())
