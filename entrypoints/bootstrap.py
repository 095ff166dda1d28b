"""THE composition root: settings -> adapters -> use cases (-> the HTTP app).

Nothing else decides which adapter serves which port. Tests pass their own
adapters (an in-memory store, a stepping clock, a cheaper password hash) through
these same functions, so the wiring the tests exercise is the wiring that ships.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from litestar import Litestar
from sqlalchemy.engine import make_url

from adapters.crypto.envelope import EnvelopeError, generate_master_key, parse_master_key
from adapters.crypto.identity import Bearer, EnvelopeSealer, JwtSigner, ThreadedScrypt
from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from adapters.redis.streams import RedisStreams
from adapters.sql.identity import SqlIdentity
from adapters.sql.migrations import migrate, pending
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, UlidSource
from core.domain.groupcommit import GroupPolicy
from core.domain.rotation import RotationPolicy
from core.ports import Clock, IdentityStore, IdSource, PasswordHasher, Store
from core.usecases import Deps, IdentityDeps, Services
from entrypoints.http.app import build_app
from entrypoints.settings import Settings

log = logging.getLogger("waypost")

#: Where development mode keeps a generated master key: beside the SQLite database.
MASTER_KEY_SUFFIX = ".master-key"


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


async def open_identity(settings: Settings) -> IdentityStore:
    """The identity stores on the settings' database (migrated by `open_store`)."""
    url = settings.database.url
    if database_kind(url) == "memory":
        return MemoryIdentity()
    return await SqlIdentity.connect(url)


def _sqlite_path(url: str) -> pathlib.Path:
    database = make_url(url).database
    assert database, "a SQLite URL names a file (settings check it)"
    return pathlib.Path(database)


def master_keys(settings: Settings) -> list[bytes]:
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


def group_policy(settings: Settings) -> GroupPolicy:
    database = settings.database
    return GroupPolicy(
        max_writes=database.group_commit_max_writes, max_events=database.group_commit_max_events
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
) -> AsyncIterator[Services]:
    """Every use case over the adapters the settings name; overrides win. Closes the stores.

    With `redis_streams.url`, `services.publisher` copies the messages to Redis streams
    (the app's lifespan runs it)."""
    keys = master_keys(settings)
    opened = store if store is not None else await open_store(settings)
    try:
        people = identity if identity is not None else await open_identity(settings)
        streams = settings.redis_streams
        sink = (
            None
            if streams.url is None
            else RedisStreams.from_url(streams.url, max_length=streams.max_length)
        )
        try:
            yield Services(
                Deps(
                    opened,
                    clock if clock is not None else SystemClock(),
                    ids if ids is not None else UlidSource(),
                    ReceiverLru(),
                    combiner=Lanes(group_policy(settings)),
                ),
                identity_deps(settings, people, hasher=hasher, keys=keys),
                sink=sink,
            )
        finally:
            if sink is not None:
                await sink.close()
            await people.close()
    finally:
        await opened.close()


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
    announce: Callable[[str], None] = announce_on_stdout,
) -> Litestar:
    """The HTTP app whose lifespan opens `open_services(settings, ...)` with these overrides,
    loads the signing keys and, on an empty store, makes the first platform administrator
    (its key goes to `announce`, once)."""

    @asynccontextmanager
    async def services() -> AsyncIterator[Services]:
        async with open_services(
            settings, store=store, identity=identity, clock=clock, ids=ids, hasher=hasher
        ) as opened:
            await start_secrets(opened)
            made = await opened.identity.bootstrap()
            if made is not None:
                announce(made)
            yield opened

    return build_app(services, settings)
