"""The gate's long poll on the real server process: idle waiters cost nothing, all wake.

200 requests wait on one gate (`status?wait=60`); over 10 s of nothing happening, the
server process's CPU time (user + system, from /proc) must stay near zero (no loop
per waiter; on SQLite one head poller per process runs while anyone waits); then one
event completes the gate and every waiter answers `complete: true`.
"""

from __future__ import annotations

import os
import time

import anyio
import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_api import NVRPP, new_tenant

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

WAITERS = 200
IDLE_SECONDS = 10.0
#: CPU seconds the idle server may spend over IDLE_SECONDS with every waiter parked.
#: Generous (the machine is shared); a loop per waiter would cost far more.
IDLE_CPU_BUDGET = 0.5


def cpu_seconds(pid: int) -> float:
    """User + system time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_200_idle_waiters_cost_no_cpu_and_all_wake(server: ServerProcess) -> None:
    api = new_tenant(server.url, server.bootstrap_key(), "acme")
    build, test = api.receiver("build"), api.receiver("test")
    group = api.post(
        "/api/v1/groups",
        {"name": "release", "type": "gate", "version": "1", "event_receiver_ids": [build, test]},
    )["data"]
    api.post("/api/v1/events", api.event(build))
    answers: list[tuple[int, bool, float]] = []
    limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=WAITERS + 10)
    async with httpx.AsyncClient(
        base_url=server.url,
        headers={"Authorization": f"Bearer {api.key}"},
        limits=limits,
        timeout=120,
    ) as http:

        async def wait() -> None:
            answer = await http.get(f"/api/v1/groups/{group}/status", params={**NVRPP, "wait": 60})
            complete = answer.status_code == 200 and answer.json()["data"]["complete"]
            answers.append((answer.status_code, complete, time.monotonic()))

        async with anyio.create_task_group() as tasks:
            for _ in range(WAITERS):
                tasks.start_soon(wait)
            await anyio.sleep(3)  # every request is in and parked
            assert answers == []
            before = cpu_seconds(server.proc.pid)
            await anyio.sleep(IDLE_SECONDS)
            idle_cpu = cpu_seconds(server.proc.pid) - before
            assert answers == []
            completed_at = time.monotonic()
            await anyio.to_thread.run_sync(lambda: api.post("/api/v1/events", api.event(test)))
    print(f"\n{WAITERS} waiters: server CPU {idle_cpu:.3f} s over {IDLE_SECONDS:.0f} s idle")
    assert idle_cpu < IDLE_CPU_BUDGET
    assert len(answers) == WAITERS
    assert all(status == 200 and complete for status, complete, _ in answers), answers[:3]
    slowest = max(at for _, _, at in answers) - completed_at
    print(f"all {WAITERS} answered within {slowest:.3f} s of the completing event")
    assert slowest < 30
