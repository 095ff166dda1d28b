"""THE composition root: settings -> adapters -> use cases (-> the HTTP app).

Nothing else decides which adapter serves which port. Tests pass their own
adapters (an in-memory store, a stepping clock) through these same functions,
so the wiring the tests exercise is the wiring that ships.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from adapters.memory.cache import ReceiverLru
from adapters.memory.store import MemoryStore
from adapters.sql.migrations import migrate, pending
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, UlidSource
from core.ports import Clock, IdSource, Store
from core.usecases import Deps, Services
from entrypoints.http.app import build_app
from entrypoints.settings import Settings


class StartupError(Exception):
    """The server must not start (e.g. pending migrations in production); the message says why."""


def database_kind(url: str) -> str:
    """`memory`, `sqlite` or `postgresql`, from a database URL."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return "postgresql" if scheme == "postgres" else scheme


async def open_store(settings: Settings) -> Store:
    """The store the settings name, with its schema brought up to date (or refused)."""
    url = settings.database.url
    if database_kind(url) == "memory":
        return MemoryStore()
    waiting = await pending(url)
    if waiting:
        if settings.mode == "production":
            raise StartupError(
                f"the database has {len(waiting)} pending migration(s) ({', '.join(waiting)}); "
                "run `waypost migrate` first (production mode never migrates by itself)"
            )
        await migrate(url)
    return await SqlStore.connect(url)


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    ids: IdSource | None = None,
) -> AsyncIterator[Services]:
    """Every use case over the adapters the settings name; overrides win. Closes the store."""
    opened = store if store is not None else await open_store(settings)
    try:
        yield Services(
            Deps(
                opened,
                clock if clock is not None else SystemClock(),
                ids if ids is not None else UlidSource(),
                ReceiverLru(),
            )
        )
    finally:
        await opened.close()


# The HTTP stack is imported only by those who build the app (not by the CLI's other
# commands or the worker).
def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    ids: IdSource | None = None,
) -> Litestar:
    """The HTTP app whose lifespan opens `open_services(settings, ...)` with these overrides."""
    return build_app(lambda: open_services(settings, store=store, clock=clock, ids=ids), settings)
