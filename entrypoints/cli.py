"""The `waypost` command: serve, worker, migrate, replay, doctor, admin, secrets.

Failures an operator meets (a bad setting, a database that cannot be reached or
opened, a refused start) are one line on stderr naming what to fix, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType

import anyio
import msgspec
import uvicorn
from prometheus_client import CollectorRegistry, start_http_server

from adapters.crypto.envelope import EnvelopeError, generate_master_key
from adapters.crypto.identity import EnvelopeSealer
from adapters.sql.engine import UnsupportedDatabase
from adapters.sql.migrations import migrate, pending
from core.domain.audit import AuditAction
from core.domain.commands import CreateTenant
from core.domain.errors import DomainError
from core.domain.identity import ApiKey
from core.domain.model import Tenant
from core.domain.rotation import VersionState
from core.ports import AppendMeta, Unavailable
from core.usecases import Services
from entrypoints import doctor, logs, supervisor
from entrypoints.bootstrap import (
    StartupError,
    announce_on_stdout,
    create_app,
    database_kind,
    database_url,
    master_keys,
    open_services,
    read_master_key_file,
    start_secrets,
)
from entrypoints.delivery_metrics import DeliveryMetrics
from entrypoints.http.mtls import ClientCertProtocol
from entrypoints.http.routes.messages import stop_streams
from entrypoints.progress import Progress
from entrypoints.settings import MAX_WORKERS, Settings, SettingsError, load_settings
from entrypoints.tracing import Tracing
from entrypoints.worker import DeliveryRunner, stop_on_signals

#: The actor of what an operator does with this command, in the log and the audit log.
OPERATOR = "cli"


def _bounded(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be {low}..{high}, not {value}")
        return value

    return parse


def version() -> str:
    try:
        return importlib.metadata.version("waypost")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waypost",
        description="Waypost: a multi-tenant event provenance registry.",
        epilog="Settings come from WAYPOST__SECTION__KEY environment variables "
        "(e.g. WAYPOST__DATABASE__URL) and the TOML file named by WAYPOST__CONFIG.",
    )
    parser.add_argument("--version", action="version", version=f"waypost {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP server",
        description="Run the HTTP server (SQLite file ./waypost.db by default). In development "
        "mode pending migrations are applied; in production mode they stop the start. With "
        "--workers N, N server processes share the address; SIGTERM stops them gracefully.",
    )
    serve.add_argument("--host", help="address to listen on (default: http.host, 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_bounded("--port", 1, 65535),
        help="port to listen on, 1..65535 (default: http.port, 8042)",
    )
    serve.add_argument(
        "--workers",
        type=_bounded("--workers", 1, MAX_WORKERS),
        help=f"server processes, 1..{MAX_WORKERS} (default: http.workers, 1)",
    )

    worker = commands.add_parser(
        "worker",
        help="deliver webhooks (no HTTP server)",
        description="Run webhook delivery: dispatch every subscription's messages and send "
        "them, with retries. Any number of workers (and servers with delivery.in_process) "
        "may run on one database. SIGTERM or SIGINT stops it gracefully.",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve delivery's Prometheus metrics on this port (at http.host); default: none",
    )

    commands.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply every pending migration to the configured database, then exit.",
    )

    replay = commands.add_parser(
        "replay",
        help="rebuild every read model from the log",
        description="Empty the read models and apply the whole log again, tenant by tenant "
        "(each in one transaction: its writers wait, nobody reads a half-built tenant). A "
        "run that stops (Ctrl-C, a lost connection, kill) goes on where it was when started "
        "again with the same options. A progress bar on a terminal, plain lines otherwise. "
        "With --verify, fail unless the rebuilt read models equal the ones before.",
    )
    replay.add_argument(
        "--verify", action="store_true", help="compare read-model digests before and after"
    )
    replay.add_argument("--tenant", help="rebuild this tenant's read models only (its slug)")
    replay.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="POSITION",
        help="replay only the log entries after this position (of each tenant): what they "
        "made is replaced, what earlier entries made is kept",
    )
    replay.add_argument(
        "--restart",
        action="store_true",
        help="forget an interrupted run's progress and start from the first tenant",
    )

    doctor = commands.add_parser(
        "doctor",
        help="check this deployment and say what is wrong",
        description="Check the settings, the database (reachable, migrated, its clock), the "
        "master key and signing keys, Redis, the SQLite file's disk, the TLS files and "
        "production-mode risks: one line each (ok, warn, fail). Exits 1 when a check fails. "
        "Changes nothing.",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON document instead of lines")

    admin = commands.add_parser(
        "admin",
        help="tenants and credentials, straight on the configured store",
        description="Operator commands that work on the configured database directly "
        "(no running server needed, no credential asked: whoever runs them holds the "
        "database and the master key).",
    )
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    create_tenant = admin_commands.add_parser(
        "create-tenant", help="create a tenant", description="Create a tenant; prints its slug."
    )
    create_tenant.add_argument("slug", help="3 to 63 of a-z, 0-9 and -")
    create_tenant.add_argument("--name", help="display name (default: the slug)")
    create_key = admin_commands.add_parser(
        "create-api-key",
        help="create an API key; prints only the key",
        description="Create an API key and print it (only it, on stdout: `KEY=$(waypost admin "
        "create-api-key ...)`). It is shown this once. Without --tenant, a platform "
        "administrator's key (--role platform_admin).",
    )
    create_key.add_argument("--tenant", help="the tenant's slug (none: a platform key)")
    create_key.add_argument(
        "--role",
        required=True,
        help="admin, event_manager, event_viewer, event_producer; platform_admin without --tenant",
    )
    create_key.add_argument("--name", required=True, help="what the key is for")
    create_key.add_argument("--expires-at", help="RFC 3339 time after which it stops working")
    admin_commands.add_parser(
        "list-tenants",
        help="every tenant",
        description="Every tenant, oldest first: slug, name, state, id, creation time.",
    )
    list_keys = admin_commands.add_parser(
        "list-api-keys",
        help="the API keys of a tenant, or the platform's",
        description="Every API key of the tenant (without --tenant: the platform "
        "administrators' keys), oldest first: id, prefix, role, name, state. Never a key.",
    )
    list_keys.add_argument("--tenant", help="the tenant's slug (none: the platform's keys)")
    revoke_key = admin_commands.add_parser(
        "revoke-api-key",
        help="revoke an API key by its id",
        description="Revoke the API key with this id (from list-api-keys), in whichever "
        "tenant: it stops working at once here, within a second on running servers.",
    )
    revoke_key.add_argument("key_id", metavar="ID", help="the key's id")

    secrets = commands.add_parser(
        "secrets",
        help="the JWT signing keys and the master key",
        description="Secrets are sealed under the master key and rotated with a grace period.",
    )
    secrets_commands = secrets.add_subparsers(
        dest="secrets_command", required=True, metavar="ACTION"
    )
    secrets_commands.add_parser("list", help="every secret version and its state (never a value)")
    secrets_commands.add_parser(
        "rotate",
        help="rotate the JWT signing key now",
        description="A new signing key signs at once; the previous one keeps verifying until "
        "its grace period ends. Running servers pick the new key up within a minute.",
    )
    rewrap = secrets_commands.add_parser(
        "rewrap",
        help="seal every stored secret again under a new master key",
        description="Open each stored secret with the configured master key(s) and seal it "
        "under the key in --new-master-key-file. Online (servers may keep running; give "
        "them the new key as secrets.master_key_file and the old one as "
        "secrets.previous_master_key_file first) and resumable (run it again after an "
        "interruption: what is done is skipped). Afterwards only the new key is needed.",
    )
    rewrap.add_argument(
        "--new-master-key-file",
        required=True,
        help="a file holding the new master key (`waypost secrets new-master-key`)",
    )
    secrets_commands.add_parser(
        "new-master-key",
        help="print a new random master key",
        description="Print 32 random bytes, base64url: a value for WAYPOST__SECRETS__MASTER_KEY.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":  # it reports bad settings as a finding of its own
        return doctor.main(os.environ, args.json)
    try:
        return _run(args, load_settings(os.environ))
    except (SettingsError, StartupError, UnsupportedDatabase) as exc:
        print(f"waypost: {exc}", file=sys.stderr)
        return 2
    except Unavailable as exc:
        print(
            f"waypost: {exc.what} cannot be used: {exc.cause} "
            "(check database.url, WAYPOST__DATABASE__URL, and that the database is running)",
            file=sys.stderr,
        )
        return 2
    except DomainError as exc:
        details = "".join(f"\n  {e.field}: {e.message}" for e in exc.errors)
        print(f"waypost: {exc.detail}{details}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:  # noqa: PLR0911 - one per command
    match args.command:
        case "serve":
            return _serve(settings, args.host, args.port, args.workers)
        case "worker":
            logs.configure(settings.log)
            # the libuv loop where there is one, as `serve` has (uvicorn picks it)
            options = {"use_uvloop": True} if sys.platform != "win32" else {}
            return anyio.run(_worker, settings, args.metrics_port, backend_options=options)
        case "migrate":
            return anyio.run(_migrate, settings)
        case "admin":
            return anyio.run(_admin, settings, args)
        case "secrets" if args.secrets_command == "new-master-key":
            print(generate_master_key())
            return 0
        case "secrets":
            return anyio.run(_secrets, settings, args)
    return anyio.run(_replay, settings, args)


async def _admin(settings: Settings, args: argparse.Namespace) -> int:
    if database_kind(settings.database.url) == "memory":
        raise StartupError(
            "admin works on the configured database, and database.url is memory://: nothing "
            "would be kept; set WAYPOST__DATABASE__URL to the server's database"
        )
    async with open_services(settings) as services:
        match args.admin_command:
            case "list-tenants":
                _list_tenants(await services.tenants.all())
                return 0
            case "list-api-keys":
                tenant_id = None
                if args.tenant is not None:
                    tenant_id = (await services.tenants.get(args.tenant)).id
                _list_keys(await services.identity.operator_api_keys(tenant_id))
                return 0
            case "revoke-api-key":
                key = await services.identity.operator_revoke_api_key(args.key_id, actor=OPERATOR)
                print(f"revoked API key {key.id} ({key.name})")
                return 0
        if args.admin_command == "create-tenant":
            tenant = await services.tenants.create(
                CreateTenant(slug=args.slug, name=args.name or args.slug.strip().lower()),
                AppendMeta(actor=OPERATOR),
            )
            await services.audit.record(
                tenant_id=None,
                actor=OPERATOR,
                action=AuditAction.TENANT_CREATED,
                target=f"tenant:{tenant.slug}",
                reason="created",
            )
            print(tenant.slug)
            return 0
        tenant_id = None
        if args.tenant is not None:
            tenant_id = (await services.tenants.get(args.tenant)).id
        _, text = await services.identity.issue_api_key(
            tenant_id,
            name=args.name,
            role=args.role,
            created_by=OPERATOR,
            expires_at=_moment(args.expires_at),
        )
        print(text)
        return 0


def _list_tenants(tenants: Sequence[Tenant]) -> None:
    print(f"{'slug':<24} {'state':<9} {'id':<26}  {'created':<20} name")
    for t in tenants:
        state = "disabled" if t.disabled else "enabled"
        created = t.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{t.slug:<24} {state:<9} {t.id:<26}  {created:<20} {t.name}")


def _list_keys(keys: Sequence[ApiKey]) -> None:
    print(f"{'id':<26}  {'prefix':<9} {'role':<15} {'state':<8} name")
    now = datetime.now(UTC)
    for k in keys:
        if k.revoked_at is not None:
            state = "revoked"
        elif k.expires_at is not None and k.expires_at <= now:
            state = "expired"
        else:
            state = "active"
        role = ",".join(k.roles)
        print(f"{k.id:<26}  {k.prefix:<9} {role:<15} {state:<8} {k.name}")


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        raise StartupError(f"--expires-at: {text!r} is not an RFC 3339 time") from None


async def _secrets(settings: Settings, args: argparse.Namespace) -> int:
    action = args.secrets_command
    if action == "rewrap":
        return await _rewrap(settings, args.new_master_key_file)
    async with open_services(settings) as services:
        if action == "rotate":
            await rotate_signing_key(services)
        found = await services.secrets.list()
    print(f"{'secret':<16} {'version':>7}  {'state':<12} {'key id':<44} verifies until")
    for info in found:
        until = info.verify_until.isoformat() if info.verify_until else ""
        if info.state == VersionState.ACTIVE:
            until = "(signs)"
        print(
            f"{info.name:<16} {info.version:>7}  {info.state:<12} "
            f"{info.public_id or '-':<44} {until}"
        )
    return 0


async def _rewrap(settings: Settings, new_key_file: str) -> int:
    new = read_master_key_file(new_key_file)
    old = master_keys(settings)
    sealer = EnvelopeSealer([new, *(key for key in old if key != new)])
    async with open_services(settings) as services:
        try:
            done = await services.secrets.rewrap(
                sealer, actor=OPERATOR, on_step=lambda text: print(f"waypost: {text}")
            )
        except EnvelopeError as exc:
            raise StartupError(
                f"a stored secret does not open with the configured master key ({exc}); "
                "configure the key it was sealed with (or as secrets.previous_master_key_file)"
            ) from None
    print(
        f"waypost: {done.sealed} secret version(s) sealed under master key {sealer.key_id}, "
        f"{done.already} already were; the new key alone opens them all now"
    )
    return 0


async def rotate_signing_key(services: Services) -> None:
    try:
        await services.secrets.maintain(force=True, actor=OPERATOR)
    except EnvelopeError as exc:
        raise StartupError(f"the master key does not open the stored secrets ({exc})") from None


async def _worker(settings: Settings, metrics_port: int | None) -> int:
    metrics = DeliveryMetrics()
    if metrics_port is not None:
        registry = CollectorRegistry()
        registry.register(metrics)
        start_http_server(metrics_port, addr=settings.http.host, registry=registry)
    tracing = Tracing.from_settings(settings, os.environ)
    try:
        async with (
            open_services(settings, sending=True, tracing=tracing) as services,
            anyio.create_task_group() as tasks,
        ):
            runner = DeliveryRunner(services, settings.delivery, metrics=metrics, tracing=tracing)
            tasks.start_soon(stop_on_signals, runner)
            await tasks.start(runner.run)
            print(f"waypost: delivering (worker {runner.name})", flush=True)
            await runner.stopped()
            tasks.cancel_scope.cancel()
    finally:
        if tracing is not None:
            tracing.shutdown()
    return 0


async def _migrate(settings: Settings) -> int:
    url = database_url(settings)
    if database_kind(url) == "memory":
        print("waypost: memory:// needs no migrations")
        return 0
    waiting = await pending(url)
    await migrate(url)
    print(f"waypost: applied {len(waiting)} migration(s); the database is up to date")
    return 0


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    async with open_services(settings) as services:
        tenant_id = None
        if args.tenant is not None:
            tenant_id = (await services.tenants.get(args.tenant)).id
        if args.after < 0:
            raise StartupError("--after: a log position is 0 or more")
        run = f"cli:{args.tenant or '*'}:{args.after}"
        if args.restart:
            await services.deps.store.replay_finished(run)
        plan = await services.replay.plan(tenant_id, run, args.after)
        done_before = len(await services.deps.store.replay_done(run))
        if done_before:
            print(f"waypost: resuming an interrupted replay: {done_before} tenant(s) done before")
        before = await services.replay.digest() if args.verify else None
        progress = Progress("replay", sum(plan.values()), sys.stdout)
        result = await services.replay.rebuild(
            tenant_id, run=run, after=args.after, on_progress=progress.advance
        )
        after = await services.replay.digest()
        progress.finish(
            f"waypost: replayed {result.applied} log entries of {result.tenants} tenant(s) "
            f"at {progress.rate():,.0f}/s; read-model digest {after}"
        )
    if before is not None and done_before:
        print("waypost: --verify compares with the digest when this run resumed", file=sys.stderr)
    if before is not None and before != after:
        print(f"waypost: digest changed (was {before})", file=sys.stderr)
        return 1
    return 0


async def _preflight(settings: Settings) -> None:
    """Before any server process starts, once: the migrations (development mode), the
    stores and the signing keys (so that a refused start fails here, with our message),
    and on an empty store the first platform administrator, whose key is printed here:
    once, whatever the number of server processes."""
    async with open_services(settings) as services:
        await start_secrets(services)
        made = await services.identity.bootstrap()
        if made is not None:
            announce_on_stdout(made)


def settle_heap() -> None:
    """Move everything alive once the app has started into the collector's permanent generation.

    The app, its routes and OpenAPI models, the compiled schemas and statements are
    ~100k objects that live as long as the process. Left in the heap, every full
    collection walks them all: ~40-50 ms here, often enough under load to be the p99
    of every request. Frozen, a full collection walks only what requests made since.
    """
    gc.collect()
    gc.freeze()


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when a stop begins: the live streams then end, so
    that the graceful stop does not wait for them (they would last its whole grace)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def _serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> int:
    logs.configure(settings.log)
    http = settings.http
    host = host or http.host
    port = port if port is not None else http.port
    workers = workers or http.workers
    if database_kind(settings.database.url) == "memory":
        # A memory store lives in one process: a preflight's would be another registry
        # (a second first administrator), and several processes would be several registries.
        if workers != 1:
            print(
                "waypost: database.url is memory://, one process's registry: serve it with "
                "one worker",
                file=sys.stderr,
            )
            return 2
        return serve_one(settings, host, port)
    anyio.run(_preflight, settings)
    if workers == 1:
        return serve_one(settings, host, port)
    return supervisor.supervise(settings, host, port, workers)


def serve_one(
    settings: Settings, host: str, port: int, sockets: list[socket.socket] | None = None
) -> int:
    """One server process, on `host:port` (or on `sockets`, bound by a supervisor)."""
    http = settings.http
    tracing = Tracing.from_settings(settings, os.environ)
    app = create_app(settings, tracing=tracing)
    app.on_startup.append(settle_heap)  # runs after the lifespan has opened the services
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=int(http.shutdown_grace_seconds),
        lifespan="on",
        log_config=None,  # uvicorn's records go through `logs.configure`'s handler
        log_level=settings.log.level.lower(),
        access_log=logs.access_log(settings.log),
        server_header=False,
        # The client's address is ours to find (`http.trusted_proxies`): uvicorn would take
        # X-Forwarded-For from any local caller and put it in the connection's place.
        proxy_headers=False,
        # TLS when configured; mTLS: client certificates required, from the configured CA.
        ssl_certfile=http.tls_cert_file,
        ssl_keyfile=http.tls_key_file,
        ssl_ca_certs=http.tls_client_ca_file,
        ssl_cert_reqs=ssl.CERT_REQUIRED if http.tls_client_ca_file else ssl.CERT_NONE,
        # mTLS: the client's certificate reaches the app (service identities)
        http=ClientCertProtocol if http.tls_client_ca_file else "auto",
    )
    logs.apply_levels(settings.log)  # uvicorn's Config set its loggers' levels to log.level
    server = _Server(config, on_exit=lambda: stop_streams(app.state))
    # uvicorn handles SIGTERM/SIGINT itself (stop accepting, let in-flight requests
    # finish, run the lifespan shutdown) and re-raises the signal afterwards. With
    # these handlers in place that re-raise is a no-op: a graceful stop exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    try:
        server.run(sockets=sockets)
    finally:
        if tracing is not None:
            tracing.shutdown()
    # uvicorn swallows lifespan start-up failures after logging them; report them as ours.
    return 0 if server.started else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
