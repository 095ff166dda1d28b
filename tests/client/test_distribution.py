"""The client distribution stands alone: generated code up to date, no server import."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import waypost_client

CLIENT = pathlib.Path(__file__).resolve().parents[2] / "client"


def test_the_async_client_is_what_unasync_makes_of_the_sync_one() -> None:
    done = subprocess.run(
        [sys.executable, str(CLIENT / "tools" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_client_imports_nothing_of_the_server() -> None:
    """In a fresh interpreter: importing the client and its CLI loads no server package."""
    code = (
        "import sys, waypost_client, waypost_client.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'core', 'adapters', 'entrypoints', 'litestar', 'sqlalchemy', 'asyncpg', 'msgspec'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_it_is_typed() -> None:
    assert (pathlib.Path(waypost_client.__file__).parent / "py.typed").exists()


def test_the_client_imports_only_what_it_declares() -> None:
    import ast
    import tomllib

    declared = {"httpx", "yaml", "anyio"}
    requirements = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    names = {r.split(">")[0].split("=")[0].strip().lower() for r in requirements["dependencies"]}
    assert names == {"httpx", "anyio"}
    assert requirements["optional-dependencies"]["yaml"] == ["pyyaml>=6"]
    imported = set()
    for path in (CLIENT / "src" / "waypost_client").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"waypost_client"}
    assert third_party <= declared, third_party - declared
