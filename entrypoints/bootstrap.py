"""THE composition root: settings -> adapters -> use cases (-> the HTTP app).

Nothing else decides which adapter serves which port. Tests pass their own
adapters (an in-memory store, a stepping clock, a cheaper password hash) through
these same functions, so the wiring the tests exercise is the wiring that ships.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from litestar import Litestar
from sqlalchemy.engine import make_url

from adapters.commits import LocalFeed, PolledFeed
from adapters.crypto.envelope import EnvelopeError, generate_master_key, parse_master_key
from adapters.crypto.identity import Bearer, EnvelopeSealer, JwtSigner, ThreadedScrypt
from adapters.memory.cache import ReceiverLru
from adapters.memory.delivery import MemoryDeliveries
from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from adapters.redis.ratelimit import RedisRateLimiter
from adapters.redis.streams import RedisStreams
from adapters.sql.availability import Availability
from adapters.sql.delivery import SqlDeliveries
from adapters.sql.identity import SqlIdentity
from adapters.sql.listen import PgCommitFeed
from adapters.sql.migrations import migrate, pending
from adapters.sql.observe import StatementObserver, observe_engine
from adapters.sql.replica import ReplicaStore
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, SystemRandomness, UlidSource
from adapters.webhooks import HttpWebhookSender
from core.domain.addresses import parse_networks
from core.domain.delivery import RetryPolicy
from core.domain.rotation import RotationPolicy
from core.domain.subscriptions import UrlPolicy
from core.ports import (
    Clock,
    DeliveryStore,
    IdentityStore,
    IdSource,
    PasswordHasher,
    SecretSealer,
    Store,
    WebhookSender,
)
from core.usecases import DeliveryDeps, Deps, IdentityDeps, Services
from entrypoints.delivery_metrics import DeliveryMetrics
from entrypoints.http.app import build_app
from entrypoints.settings import Settings
from entrypoints.tracing import Tracing
from entrypoints.worker import delivering

log = logging.getLogger("waypost")

#: Where development mode keeps a generated master key: beside the SQLite database.
MASTER_KEY_SUFFIX = ".master-key"


class StartupError(Exception):
    """The server must not start (e.g. pending migrations in production); the message says why."""


def database_kind(url: str) -> str:
    """`memory`, `sqlite` or `postgresql`, from a database URL."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return "postgresql" if scheme == "postgres" else scheme


def database_url(settings: Settings) -> str:
    """`database.url`, with the password of `database.password_file` when it names one and
    the URL has none. A file that cannot be read stops the start, naming the setting."""
    return with_password(settings, settings.database.url)


def with_password(settings: Settings, given: str) -> str:
    """A PostgreSQL URL of the settings (`database.url`, `database.read_url`: a streaming
    replica has the primary's roles) with the password of `database.password_file` when
    it names one and the URL has none."""
    database = settings.database
    if database.password_file is None or database_kind(given) != "postgresql":
        return given
    url = make_url(given)
    if url.password:
        return given
    path = pathlib.Path(database.password_file)
    try:
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"database.password_file: cannot read {path}: {exc}") from None
    if not password:
        raise StartupError(f"database.password_file: {path} is empty")
    return url.set(password=password).render_as_string(hide_password=False)


async def open_store(settings: Settings, availability: Availability | None = None) -> Store:
    """The store the settings name, with its schema brought up to date (or refused)."""
    url = database_url(settings)
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
    database = settings.database
    if database_kind(url) == "sqlite":
        return await SqlStore.connect(
            url, availability=availability, busy_timeout=database.busy_timeout_seconds
        )
    primary = await SqlStore.connect(url, availability=availability, pool_size=database.pool_size)
    if database.read_url is None:
        return primary
    return ReplicaStore(
        primary,
        with_password(settings, database.read_url),
        max_lag=database.read_max_lag_seconds,
        pool_size=database.pool_size,
    )


async def open_identity(
    settings: Settings, availability: Availability | None = None
) -> IdentityStore:
    """The identity stores on the settings' database (migrated by `open_store`)."""
    url = database_url(settings)
    if database_kind(url) == "memory":
        return MemoryIdentity()
    database = settings.database
    if database_kind(url) == "sqlite":
        return await SqlIdentity.connect(
            url, availability=availability, busy_timeout=database.busy_timeout_seconds
        )
    # The identity stores' queries are short and rarer than the store's (credentials are
    # remembered for a second): half its pool, at least two connections.
    pool = max(2, database.pool_size // 2)
    return await SqlIdentity.connect(url, availability=availability, pool_size=pool, max_overflow=0)


async def open_deliveries(
    settings: Settings, store: Store, availability: Availability | None = None
) -> DeliveryStore:
    """Subscriptions and deliveries on the settings' database (migrated by `open_store`);
    SQLite shares `store`'s connections (one writer per process)."""
    url = database_url(settings)
    if database_kind(url) == "memory":
        # one key space for Idempotency-Key records, as in the SQL table
        return MemoryDeliveries(store.records if isinstance(store, MemoryStore) else None)
    if isinstance(store, ReplicaStore):
        store = store.primary
    return await SqlDeliveries.connect(
        url,
        share=store if isinstance(store, SqlStore) else None,
        availability=availability,
        busy_timeout=settings.database.busy_timeout_seconds,
    )


def user_agent() -> str:
    """What outgoing webhooks say they come from: `Waypost/<version>`."""
    try:
        return f"Waypost/{importlib.metadata.version('waypost')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "Waypost"


def webhook_sender(settings: Settings) -> WebhookSender:
    """The sender of webhooks, behind the address guard the settings configure."""
    delivery = settings.delivery
    return HttpWebhookSender(
        allowed_networks=parse_networks(delivery.allowed_networks),
        require_https=delivery.https_required(settings.mode),
        excerpt_bytes=delivery.response_excerpt_bytes,
        max_connections=delivery.concurrency,
    )


def delivery_deps(
    settings: Settings,
    store: DeliveryStore,
    sealer: SecretSealer,
    sender: WebhookSender | None,
) -> DeliveryDeps:
    delivery = settings.delivery
    return DeliveryDeps(
        store,
        sealer=sealer,
        randomness=SystemRandomness(),
        url_policy=UrlPolicy(
            allow_http=not delivery.https_required(settings.mode),
            allowed=parse_networks(delivery.allowed_networks),
        ),
        retry=RetryPolicy(
            schedule=tuple(delivery.retry_schedule_seconds),
            disable_after=timedelta(hours=delivery.disable_after_hours),
        ),
        sender=sender,
        timeout=timedelta(seconds=delivery.timeout_seconds),
        ordering_wait=timedelta(seconds=delivery.ordering_wait_seconds),
        user_agent=user_agent(),
    )


def open_feed(settings: Settings, store: Store) -> LocalFeed:
    """The commit feed of `store`: LISTEN/NOTIFY on PostgreSQL; in-process wake-ups for the
    memory store; for SQLite (and any other store) in-process wake-ups where the store
    tells of its commits, plus a head poller for other processes' while someone waits."""
    primary = store.primary if isinstance(store, ReplicaStore) else store
    if isinstance(primary, SqlStore) and primary.postgres:
        return PgCommitFeed(primary.url or settings.database.url)
    feed = LocalFeed() if isinstance(store, MemoryStore) else PolledFeed(store)
    if isinstance(store, MemoryStore | SqlStore):
        store.on_commit(feed.committed)
    return feed


def _sqlite_path(url: str) -> pathlib.Path:
    database = make_url(url).database
    assert database, "a SQLite URL names a file (settings check it)"
    return pathlib.Path(database)


def master_keys(settings: Settings) -> list[bytes]:
    """The master key the settings give, then the previous one while it is being rotated
    (`secrets.previous_master_key[_file]`: it still opens, never seals)."""
    keys = _master_key(settings)
    secrets = settings.secrets
    if secrets.previous_master_key is not None:
        keys.append(_parse(secrets.previous_master_key, "WAYPOST__SECRETS__PREVIOUS_MASTER_KEY"))
    elif secrets.previous_master_key_file is not None:
        keys.append(read_master_key_file(secrets.previous_master_key_file))
    return keys


def read_master_key_file(name: str) -> bytes:
    path = pathlib.Path(name)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read the master key file {path}: {exc}") from None
    return _parse(text, f"the master key file {path}")


def _master_key(settings: Settings) -> list[bytes]:
    """The master key the settings give (environment or file), or development's own.

    Development mode without one: a generated key kept (0600) beside the SQLite
    database and reused on every start; for `memory://` a key for this process
    only. Production mode without one, or PostgreSQL in any mode, refuses.
    """
    secrets = settings.secrets
    if secrets.master_key is not None:
        return [_parse(secrets.master_key, "WAYPOST__SECRETS__MASTER_KEY")]
    if secrets.master_key_file is not None:
        path = pathlib.Path(secrets.master_key_file)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise StartupError(f"secrets.master_key_file: cannot read {path}: {exc}") from None
        return [_parse(text, f"the master key file {path}")]
    hint = (
        "set WAYPOST__SECRETS__MASTER_KEY (or WAYPOST__SECRETS__MASTER_KEY_FILE) to a key "
        "made by `waypost secrets new-master-key`, and keep it outside the database"
    )
    if settings.mode == "production":
        raise StartupError(f"production mode needs a master key to seal secrets: {hint}")
    kind = database_kind(settings.database.url)
    if kind == "memory":
        log.warning("no master key given: secrets are sealed with a key of this process only")
        return [parse_master_key(generate_master_key())]
    if kind != "sqlite":
        raise StartupError(
            f"a PostgreSQL database needs a master key given to every server: {hint}"
        )
    path = _sqlite_path(settings.database.url)
    path = path.with_name(path.name + MASTER_KEY_SUFFIX)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return [_parse(path.read_text(encoding="ascii"), f"the master key file {path}")]
    except OSError as exc:
        raise StartupError(f"cannot create the development master key {path}: {exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(generate_master_key() + "\n")
    log.warning(
        "development mode: generated a master key in %s (mode 0600); production needs one "
        "given: %s",
        path,
        hint,
    )
    return [_parse(path.read_text(encoding="ascii"), str(path))]


def _parse(text: str, where: str) -> bytes:
    try:
        return parse_master_key(text)
    except ValueError as exc:
        raise StartupError(f"{where}: {exc}") from None


def rotation_policy(settings: Settings) -> RotationPolicy:
    secrets = settings.secrets
    return RotationPolicy(
        rotate_every=timedelta(days=secrets.rotate_every_days),
        grace=timedelta(seconds=secrets.grace_seconds),
        prepublish=timedelta(hours=secrets.prepublish_hours),
    )


def identity_deps(
    settings: Settings,
    store: IdentityStore,
    *,
    hasher: PasswordHasher | None = None,
    keys: Sequence[bytes] | None = None,
) -> IdentityDeps:
    security = settings.security
    return IdentityDeps(
        store,
        hasher=hasher if hasher is not None else ThreadedScrypt(),
        bearer=Bearer(),
        sealer=EnvelopeSealer(keys if keys is not None else master_keys(settings)),
        signer=JwtSigner(
            issuer=security.issuer,
            audience=security.audience,
            algorithm=settings.secrets.signing_algorithm,
            ttl=timedelta(seconds=security.access_token_ttl_seconds),
        ),
        policy=rotation_policy(settings),
        audit_retention=(
            timedelta(days=settings.audit.retention_days) if settings.audit.retention_days else None
        ),
    )


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    store: Store | None = None,
    identity: IdentityStore | None = None,
    clock: Clock | None = None,
    ids: IdSource | None = None,
    hasher: PasswordHasher | None = None,
    deliveries: DeliveryStore | None = None,
    sender: WebhookSender | None = None,
    sending: bool = False,
    tracing: Tracing | None = None,
) -> AsyncIterator[Services]:
    """Every use case over the adapters the settings name; overrides win. Closes the stores.

    With `redis.url` (and `redis.publish_messages`), `services.publisher` copies the
    messages to Redis streams (the app's lifespan runs it). SQL statements are watched
    (`observe_sql`). `sending`: webhooks are sent from this process (a sender is made
    unless one is given). `services.feed` tells of every commit (the delivery dispatcher
    waits on it)."""
    keys = master_keys(settings)
    url = settings.database.url
    # One per database in a process: an outage is logged once, whichever store meets it.
    availability = None if database_kind(url) == "memory" else Availability(url)
    opened = store if store is not None else await open_store(settings, availability)
    try:
        people = identity if identity is not None else await open_identity(settings, availability)
        if isinstance(opened, MemoryStore) and isinstance(people, MemoryIdentity):
            people.share_records(opened.records)  # one key space, as in the SQL table
        redis = settings.redis
        sink = (
            RedisStreams.from_url(redis.url, max_length=redis.stream_max_length)
            if redis.url is not None and redis.publish_messages
            else None
        )
        subscriptions: DeliveryStore | None = None
        try:
            subscriptions = (
                deliveries
                if deliveries is not None
                else await open_deliveries(settings, opened, availability)
            )
            observe_sql(settings, opened, people, tracing, subscriptions)
            if sender is None and sending:
                sender = webhook_sender(settings)
            secrets = identity_deps(settings, people, hasher=hasher, keys=keys)
            async with open_feed(settings, opened).running() as feed:
                yield Services(
                    Deps(
                        opened,
                        clock if clock is not None else SystemClock(),
                        ids if ids is not None else UlidSource(),
                        ReceiverLru(),
                    ),
                    secrets,
                    sink=sink,
                    delivery=delivery_deps(settings, subscriptions, secrets.sealer, sender),
                    feed=feed,
                )
        finally:
            if sender is not None:
                await sender.close()
            if subscriptions is not None:
                await subscriptions.close()
            if sink is not None:
                await sink.close()
            await people.close()
    finally:
        await opened.close()


def observe_sql(
    settings: Settings,
    store: Store,
    identity: IdentityStore,
    tracing: Tracing | None,
    deliveries: DeliveryStore | None = None,
) -> None:
    """Slow statements logged (`log.slow_query_ms`), every one a span when tracing."""
    span = None if tracing is None else tracing.span
    if isinstance(deliveries, SqlDeliveries):
        deliveries.observe(
            StatementObserver(
                system=database_kind(settings.database.url),
                slow_ms=settings.log.slow_query_ms,
                span=span,
            )
        )
    if isinstance(store, ReplicaStore):
        store = store.primary  # the replica's reads are not watched
    if isinstance(store, SqlStore):
        system = database_kind(settings.database.url)
        store.observe(
            StatementObserver(system=system, slow_ms=settings.log.slow_query_ms, span=span)
        )
    if isinstance(identity, SqlIdentity):
        system = identity.engine.dialect.name
        observe_engine(
            identity.engine.sync_engine,
            StatementObserver(system=system, slow_ms=settings.log.slow_query_ms, span=span),
        )


async def start_secrets(services: Services) -> None:
    """Bring the signing keys up to date and load them; a master key that does not open
    them stops the start (it never decrypts them into something else)."""
    try:
        await services.secrets.start()
    except EnvelopeError as exc:
        raise StartupError(
            f"the master key does not open the stored secrets ({exc}); give the master key "
            "they were sealed with"
        ) from None


def announce_on_stdout(text: str) -> None:
    """The first platform administrator's key: on stdout, once, never in a log line (logs
    are shipped and kept; a credential must not be)."""
    print(
        "waypost: first start: created a platform administrator. Its API key, shown this "
        f"once (keep it, or make another with `waypost admin create-api-key`):\n{text}",
        flush=True,
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    identity: IdentityStore | None = None,
    clock: Clock | None = None,
    ids: IdSource | None = None,
    hasher: PasswordHasher | None = None,
    deliveries: DeliveryStore | None = None,
    sender: WebhookSender | None = None,
    announce: Callable[[str], None] = announce_on_stdout,
    tracing: Tracing | None = None,
) -> Litestar:
    """The HTTP app whose lifespan opens `open_services(settings, ...)` with these overrides,
    loads the signing keys and, on an empty store, makes the first platform administrator
    (its key goes to `announce`, once). With `delivery.in_process`, the lifespan runs
    delivery too (and stops it gracefully at shutdown). With `tracing`, requests, use
    cases and SQL statements are spans (the caller shuts it down)."""
    in_process = settings.delivery.in_process
    metrics = DeliveryMetrics()

    @asynccontextmanager
    async def services() -> AsyncIterator[Services]:
        async with open_services(
            settings,
            store=store,
            identity=identity,
            clock=clock,
            ids=ids,
            hasher=hasher,
            deliveries=deliveries,
            sender=sender,
            sending=in_process,
            tracing=tracing,
        ) as opened:
            await start_secrets(opened)
            made = await opened.identity.bootstrap()
            if made is not None:
                announce(made)
            if tracing is not None:
                tracing.wrap_services(opened)
            try:
                if not in_process:
                    yield opened
                    return
                async with delivering(opened, settings.delivery, metrics=metrics, tracing=tracing):
                    yield opened
            finally:
                if tracing is not None:
                    tracing.provider.force_flush()

    redis = settings.redis
    shared = (
        RedisRateLimiter.from_url(redis.url, timeout=redis.timeout_seconds)
        if redis.url is not None and redis.shared_limits
        else None
    )
    app = build_app(
        services,
        settings,
        collectors=[metrics] if in_process else [],
        shared_limiter=shared,
    )
    if tracing is not None:
        app.asgi_handler = tracing.middleware(app.asgi_handler)
    return app
