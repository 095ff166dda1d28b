"""The real server's log in JSON: every line parses, uvicorn's included, and no credential."""

from __future__ import annotations

import json
import pathlib

import httpx

from tests.e2e.conftest import ServerProcess


def test_a_json_log_is_json_lines_from_start_to_stop(tmp_path: pathlib.Path) -> None:
    env = {
        "WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 'waypost.db'}",
        "WAYPOST__LOG__FORMAT": "json",
    }
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        server.wait_ready()
        key = server.bootstrap_key()
        answer = httpx.get(
            f"{server.url}/api/v1/tenants", headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200
    finally:
        assert server.stop() == 0, server.output()
    entries, other = [], []
    for line in server.log.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            other.append(line)
    # the one thing not in the log: the first administrator's key, on stdout, once
    assert len(other) == 2, other
    assert other[0].startswith("waypost: first start:")
    assert other[1] == key
    assert not any(key in json.dumps(entry) for entry in entries)
    messages = [(e["logger"], e["message"]) for e in entries]
    assert ("uvicorn.error", "Application startup complete.") in messages
    assert any(
        logger == "waypost" and "generated a master key" in message for logger, message in messages
    ), messages
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
