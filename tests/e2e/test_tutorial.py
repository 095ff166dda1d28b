"""The tutorial's shell blocks, run in order by bash against a real server."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from tests.e2e.conftest import ServerProcess, free_port

pytestmark = pytest.mark.slow

TUTORIAL = pathlib.Path(__file__).parents[2] / "docs" / "tutorial" / "first-gate.md"


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.M | re.S)


def test_the_tutorial_runs_as_written(tmp_path: pathlib.Path) -> None:
    blocks = shell_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 8
    script = "set -euo pipefail\n" + "\n".join(blocks)
    database = {"WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 't.db'}"}
    # step 10's receiver is on loopback, which the tutorial's server allows (step 1)
    allowed = {"WAYPOST__DELIVERY__ALLOWED_NETWORKS": "127.0.0.0/8"}
    server = ServerProcess({**database, **allowed}, tmp_path / "log")
    # `waypost` on the PATH, as in the tutorial's virtualenv
    bin_dir = pathlib.Path(sys.executable).parent
    try:
        server.wait_ready()
        done = subprocess.run(
            ["bash", "-c", script],
            env={
                "WAYPOST": server.url,
                "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
                "HOOK_PORT": str(free_port()),
                **database,
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        out = done.stdout
        assert "/payload/failed" in out
        assert '"complete":false' in out.replace(" ", "")
        lines = out.strip().splitlines()
        # step 10: the webhook arrived and verified, and the subscription lists it
        assert lines[-2:] == ["verified waypost.group.completed", "1 delivered"]
        completions = json.loads(lines[-4])
        assert len(completions["data"]) == 1
        tail = lines[-3]
        assert tail.startswith("data: ")
        message = json.loads(tail.removeprefix("data: "))
        assert message["type"] == "waypost.group.completed"
        assert message["data"]["events"][0]["id"] == completions["data"][0]["triggering_event_id"]
        # the shell got its credentials the way the page says; none was printed to it
        assert "wp_" not in out
        assert "whsec_" not in out
    finally:
        assert server.stop() == 0
