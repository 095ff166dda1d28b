"""Write `waypost_client/aio.py` (AsyncClient) from `waypost_client/client.py` (Client).

The two clients have the same methods; the async one is generated so that they cannot
drift apart. Run `python client/tools/unasync.py` after changing client.py; a test
(`tests/client/test_unasync.py`) fails while aio.py is not what this script makes.
"""

from __future__ import annotations

import ast
import pathlib
import re
import shutil
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "waypost_client"
SOURCE = PACKAGE / "client.py"
TARGET = PACKAGE / "aio.py"
API_MARK = "    # --- API ---"

HEADER = '''"""`AsyncClient`: the asynchronous SDK, the same methods as `Client`, awaited.

GENERATED from client.py by client/tools/unasync.py: do not edit by hand.

```python
async with AsyncClient() as waypost:
    status = await waypost.wait_for_gate(group_id, key, timeout=600)
    async for event in waypost.list_events(name="app"):
        ...
```
"""
'''

REPLACEMENTS = [
    ("from collections.abc import Iterator,", "from collections.abc import AsyncIterator,"),
    ("import httpx\n", "import anyio\nimport httpx\n"),
    ('__all__ = ["Client"]', '__all__ = ["AsyncClient"]'),
    ("class Client:", "class AsyncClient:"),
    ('"""A synchronous Waypost client', '"""An asynchronous Waypost client'),
    ("httpx.BaseTransport", "httpx.AsyncBaseTransport"),
    ("httpx.Client(", "httpx.AsyncClient("),
    ("    def __enter__(self) -> Self:", "    async def __aenter__(self) -> Self:"),
    ("    def __exit__(", "    async def __aexit__("),
    ("        self.close()\n", "        await self.aclose()\n"),
    (
        "    def close(self) -> None:\n        self._http.close()",
        "    async def aclose(self) -> None:\n        await self._http.aclose()",
    ),
    ("    def _run(", "    async def _run("),
    ("self._run(", "await self._run("),
    ("self._http.request(", "await self._http.request("),
    ("time.sleep(", "await anyio.sleep("),
    (
        "    def _pages(self, call: PageCall[T]) -> Iterator[T]:",
        "    async def _pages(self, call: PageCall[T]) -> AsyncIterator[T]:",
    ),
    ("    def find_receiver(", "    async def find_receiver("),
    ("    def find_group(", "    async def find_group("),
    ("= _one(", "= await _aone("),
    ("    def wait_for_gate(", "    async def wait_for_gate("),
    ("status = self.group_status(", "status = await self.group_status("),
    ("    def messages(", "    async def messages("),
    (") -> Iterator[Message]:", ") -> AsyncIterator[Message]:"),
    ("for message in self._tail(", "async for message in self._tail("),
    ("    def _tail(", "    async def _tail("),
    (") -> Iterator[Message | None]:", ") -> AsyncIterator[Message | None]:"),
    ("        with self._http.stream(", "        async with self._http.stream("),
    ("response.read()", "await response.aread()"),
    ("for line in response.iter_lines():", "async for line in response.aiter_lines():"),
]

TAIL = """

async def _aone(ref: str, kind: str, by_id: Any, listing: Any) -> Any:
    parts = split_ref(ref)
    if parts is None:
        return await by_id(ref)
    name, version = parts
    found = [item async for item in listing(name=name, version=version, limit=10)]
    if not found:
        raise NotFound(404, title="Not Found", detail=f"No {kind} {ref}.")
    if len(found) > 1:
        types = ", ".join(sorted(getattr(f, "type", "?") for f in found))
        raise ValueError(f"{len(found)} {kind}s are {ref} (types {types}): give an id")
    return found[0]
"""


def _api_section(text: str) -> str:
    """Public methods: `async def` unless they return an iterator (those stay `def` and
    return an async iterator)."""
    chunks = text.split("\n    def ")
    out = [chunks[0]]
    for chunk in chunks[1:]:
        signature = chunk.split(":\n", 1)[0]
        if "-> Iterator[" in signature:
            out.append("\n    def " + chunk.replace("-> Iterator[", "-> AsyncIterator[", 1))
        else:
            out.append("\n    async def " + chunk)
    return "".join(out)


def generate() -> str:
    text = SOURCE.read_text(encoding="utf-8")
    docstring_end = text.index('"""', 3) + 3
    text = HEADER + text[docstring_end:]
    head, mark, api = text.partition(API_MARK)
    api_part, _, rest = api.partition("\n\ndef _json(")
    api_part = _api_section(api_part)
    text = head + mark + api_part + "\n\ndef _json(" + rest
    for old, new in REPLACEMENTS:
        if old not in text:
            raise SystemExit(f"unasync: {old!r} not found in client.py")
        text = text.replace(old, new)
    text = re.sub(r"\n    # Generated into waypost_client\.aio by tools:[^\n]*", "", text)
    text = text.replace(
        "from typing import Any, Self, TypeVar", "from typing import Any, Self, TypeVar"
    )
    # `_one` (sync) is not used by the async client; keep split_ref, add the async lookup.
    start = text.index("\n\ndef _one(")
    return text[:start] + TAIL


def formatted(text: str) -> str:
    """The text as `ruff format` leaves it (the repository's style), when ruff is here."""
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).with_name("ruff"))
    if not pathlib.Path(ruff).exists():
        return text
    done = subprocess.run(
        [ruff, "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def main() -> None:
    if "--check" in sys.argv:
        if not up_to_date():
            raise SystemExit("aio.py is out of date: run python client/tools/unasync.py")
        return
    TARGET.write_text(formatted(generate()), encoding="utf-8")


def up_to_date() -> bool:
    """Whether aio.py is what `generate` makes, formatting aside (its syntax trees are
    equal; docstrings and comments are part of them or irrelevant)."""
    made = ast.dump(ast.parse(generate()))
    return made == ast.dump(ast.parse(TARGET.read_text(encoding="utf-8")))


if __name__ == "__main__":
    main()
