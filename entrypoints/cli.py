"""The `waypost` command: serve, migrate, replay."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import anyio
import uvicorn

from adapters.sql.migrations import migrate, pending
from entrypoints.bootstrap import (
    StartupError,
    create_app,
    database_kind,
    open_services,
    open_store,
)
from entrypoints.settings import Settings, SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waypost",
        description="Waypost: a multi-tenant event provenance registry.",
        epilog="Settings come from WAYPOST__SECTION__KEY environment variables "
        "(e.g. WAYPOST__DATABASE__URL) and the TOML file named by WAYPOST__CONFIG.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP server",
        description="Run the HTTP server (SQLite file ./waypost.db by default). In development "
        "mode pending migrations are applied; in production mode they stop the start.",
    )
    serve.add_argument("--host", help="address to listen on (default: http.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: http.port, 8042)")

    commands.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply every pending migration to the configured database, then exit.",
    )

    replay = commands.add_parser(
        "replay",
        help="rebuild every read model from the log",
        description="Empty the read models and apply the whole log again. With --verify, "
        "fail unless the rebuilt read models equal the ones before.",
    )
    replay.add_argument(
        "--verify", action="store_true", help="compare read-model digests before and after"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(os.environ)
        if args.command == "serve":
            return _serve(settings, args.host, args.port)
        if args.command == "migrate":
            return anyio.run(_migrate, settings)
        return anyio.run(_replay, settings, args.verify)
    except (SettingsError, StartupError) as exc:
        print(f"waypost: {exc}", file=sys.stderr)
        return 2


async def _migrate(settings: Settings) -> int:
    url = settings.database.url
    if database_kind(url) == "memory":
        print("waypost: memory:// needs no migrations")
        return 0
    waiting = await pending(url)
    await migrate(url)
    print(f"waypost: applied {len(waiting)} migration(s); the database is up to date")
    return 0


async def _replay(settings: Settings, verify: bool) -> int:
    async with open_services(settings) as services:
        before = await services.replay.digest()
        applied = await services.replay.rebuild()
        after = await services.replay.digest()
    print(f"waypost: replayed {applied} log entries; read-model digest {after}")
    if verify and before != after:
        print(f"waypost: digest changed (was {before})", file=sys.stderr)
        return 1
    return 0


async def _preflight(settings: Settings) -> None:
    """Open and close the store once, so a refused start fails here with our message."""
    store = await open_store(settings)
    await store.close()


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    anyio.run(_preflight, settings)

    http = settings.http
    config = uvicorn.Config(
        create_app(settings),
        host=host or http.host,
        port=port or http.port,
        timeout_graceful_shutdown=int(http.shutdown_grace_seconds),
        lifespan="on",
        log_level="info",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT itself (stop accepting, let in-flight requests
    # finish, run the lifespan shutdown) and re-raises the signal afterwards. With
    # these handlers in place that re-raise is a no-op: a graceful stop exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run()
    # uvicorn swallows lifespan start-up failures after logging them; report them as ours.
    return 0 if server.started else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
