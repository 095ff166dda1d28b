"""`waypost replay` as an operator runs it: a progress bar on a terminal, plain lines
elsewhere, and a run killed midway that, started again, ends as one run would."""

from __future__ import annotations

import os
import pathlib
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time

import anyio
import pytest

from core.domain.commands import CreateGroup, CreateTenant, RegisterReceiver
from core.ports import AppendMeta
from core.usecases import Actor
from entrypoints.bootstrap import open_services
from entrypoints.settings import load_settings
from tests.contract.test_usecases import event
from tests.e2e.conftest import cli

DIGEST = "read-model digest "


def _fill(url: str, tenants: int, events: int) -> None:
    async def fill() -> None:
        async with open_services(load_settings({"WAYPOST__DATABASE__URL": url})) as services:
            for n in range(tenants):
                tenant = await services.tenants.create(
                    CreateTenant(slug=f"tenant-{n}", name=f"T{n}"), AppendMeta(actor="tests")
                )
                who = Actor(tenant_id=tenant.id, principal="tests")
                made, _ = await services.receivers.register(
                    who,
                    RegisterReceiver(
                        name="build", type="ci", version="1", description="", schema={}
                    ),
                )
                await services.groups.create(
                    who,
                    CreateGroup(name="g", type="t", version="1", event_receiver_ids=[made.id]),
                )
                for start in range(0, events, 1000):
                    count = min(1000, events - start)
                    await services.events.record_batch(who, [event(made.id)] * count)

    cli("migrate", env={"WAYPOST__DATABASE__URL": url})
    anyio.run(fill)


def _digest(output: str) -> str:
    return output.rsplit(DIGEST, 1)[1].split(maxsplit=1)[0]


@pytest.fixture
def filled(tmp_path: pathlib.Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'waypost.db'}"
    _fill(url, tenants=2, events=3000)
    return {"WAYPOST__DATABASE__URL": url}


def test_a_progress_bar_on_a_terminal(filled: dict[str, str]) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "replay", "--verify"],
        env={**os.environ, **filled},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other side closed: the process ended
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")
    text = seen.decode()
    assert "\rreplay [" in text  # drawn in place
    assert "100%" in text
    assert "6,008/6,008" in text  # 2 x (tenant, receiver, group, 3000 events, completion ...)
    assert "/s  ETA " in text
    assert "replayed 6008 log entries of 2 tenant(s)" in text


def test_plain_lines_when_not_a_terminal(filled: dict[str, str]) -> None:
    done = cli("replay", env=filled)
    assert "\r" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[-2].startswith("replay: 6008/6008 (100%), ")
    assert lines[-1].startswith("waypost: replayed 6008 log entries of 2 tenant(s) at ")
    only = cli("replay", "--tenant", "tenant-1", env=filled)
    assert "replayed 3004 log entries of 1 tenant(s)" in only.stdout
    assert _digest(only.stdout) == _digest(done.stdout)


@pytest.mark.slow
def test_a_run_killed_midway_resumes_where_it_was(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path / 'waypost.db'}"
    _fill(url, tenants=3, events=15_000)
    env = {"WAYPOST__DATABASE__URL": url}
    once = _digest(cli("replay", env=env).stdout)  # what one whole run leaves
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "replay"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = sqlite3.connect(tmp_path / "waypost.db")
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            (done,) = database.execute("SELECT count(*) FROM replay_progress").fetchone()
            if done >= 1:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the replay ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        (done,) = database.execute("SELECT count(*) FROM replay_progress").fetchone()
    finally:
        database.close()
    assert 1 <= done < 3
    again = cli("replay", "--verify", env=env)
    assert f"resuming an interrupted replay: {done} tenant(s) done before" in again.stdout
    assert f"of {3 - done} tenant(s)" in again.stdout
    assert _digest(again.stdout) == once


def test_after_a_position_a_lost_tail_comes_back(filled: dict[str, str]) -> None:
    whole = _digest(cli("replay", env=filled).stdout)
    path = filled["WAYPOST__DATABASE__URL"].removeprefix("sqlite:///")
    database = sqlite3.connect(path)
    try:  # the read models lose the newest 100 events of a tenant (a restore gone wrong)
        (tenant,) = database.execute("SELECT id FROM tenants WHERE slug = 'tenant-1'").fetchone()
        with database:
            database.execute(
                "DELETE FROM events WHERE tenant_id = ? AND id IN "
                "(SELECT id FROM events WHERE tenant_id = ? ORDER BY id DESC LIMIT 100)",
                (tenant, tenant),
            )
    finally:
        database.close()
    damaged = cli("replay", "--tenant", "tenant-1", "--after", "3004", env=filled)
    assert "replayed 0 log entries" in damaged.stdout
    assert _digest(damaged.stdout) != whole
    repaired = cli("replay", "--tenant", "tenant-1", "--after", "2800", env=filled)
    assert "replayed 204 log entries of 1 tenant(s)" in repaired.stdout
    assert _digest(repaired.stdout) == whole
    refused = cli("replay", "--after", "-1", env=filled, check=False)
    assert refused.returncode == 2
    assert "--after" in refused.stderr
