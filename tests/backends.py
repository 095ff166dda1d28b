"""Every backend of the Store port, opened the same way for contract and integration tests."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from adapters.memory.store import MemoryStore
from core.ports import IdentityStore, Store

BACKENDS = ("memory", "sqlite", "postgres")


@asynccontextmanager
async def open_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[Store]:
    """A fresh, empty, migrated store of the named backend; closed afterwards."""
    store: Store
    if backend == "memory":
        store = MemoryStore()
    else:
        from adapters.sql.migrations import migrate
        from adapters.sql.store import SqlStore

        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'waypost.db'}"
        else:
            url = request.getfixturevalue("fresh_database")
        await migrate(url)
        store = await SqlStore.connect(url)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_identity(
    backend: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[IdentityStore]:
    """Fresh, empty, migrated identity stores of the named backend; closed afterwards."""
    identity: IdentityStore
    if backend == "memory":
        from adapters.memory.identity import MemoryIdentity

        identity = MemoryIdentity()
    else:
        from adapters.sql.identity import SqlIdentity
        from adapters.sql.migrations import migrate

        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}"
        else:
            url = request.getfixturevalue("fresh_database")
        await migrate(url)
        identity = await SqlIdentity.connect(url)
    try:
        yield identity
    finally:
        await identity.close()
