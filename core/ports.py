"""What the use cases need from the outside world, as Protocols.

The store is reached through transactions. A *write* transaction belongs to one
tenant and holds that tenant's writer lock from its first statement to its
commit: writes of one tenant are serialized, which makes log positions
gap-free in commit order and makes the gate decision for every (group,
artifact) of the tenant exactly-once (DOMAIN.md, "Exactly once under
concurrency"). A *read* transaction sees one consistent snapshot and takes no
lock.

Appending to the log also updates the inline read models and their checkpoint
in the same transaction: one call, so a write can never forget a projection,
and replay uses the very same projection code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeVar

import msgspec

from core.domain.audit import AuditRecord
from core.domain.delivery import Attempt, Delivery, DeliveryStatus
from core.domain.envelope import Envelope
from core.domain.idempotency import Record
from core.domain.identity import (
    ApiKey,
    Claims,
    Principal,
    RefreshFamily,
    RefreshToken,
    User,
)
from core.domain.messages import Positioned
from core.domain.model import (
    Completion,
    DomainEvent,
    Event,
    Group,
    Nvrpp,
    Receiver,
    Tenant,
)
from core.domain.ratelimit import Rate
from core.domain.refusals import Refusal
from core.domain.rotation import SecretVersion
from core.domain.schemas import CompiledSchema
from core.domain.subscriptions import Subscription


class Unavailable(Exception):
    """A port's service cannot serve now: a database that is down or unreachable, a lock
    another process held too long. Nothing was written; the same request may succeed a
    moment later. Every port may raise it; `cause` says why, for the operator's log (never
    for the caller)."""

    def __init__(self, what: str, cause: str) -> None:
        super().__init__(f"{what} is unavailable: {cause}")
        self.what = what
        self.cause = cause


Order = Literal["asc", "desc"]
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class PageRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Keyset pagination: `after` is the id of the last item of the previous page."""

    limit: int = DEFAULT_PAGE_SIZE
    after: str | None = None
    order: Order = "desc"


class ReceiverFilter(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None = None
    type: str | None = None
    version: str | None = None
    fingerprint: str | None = None


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Exact-match filters, ANDed; `since` inclusive, `until` exclusive, on `created_at`."""

    name: str | None = None
    version: str | None = None
    release: str | None = None
    platform_id: str | None = None
    package: str | None = None
    success: bool | None = None
    event_receiver_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class GroupFilter(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None = None
    type: str | None = None
    version: str | None = None
    enabled: bool | None = None


class CompletionFilter(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None = None
    version: str | None = None
    release: str | None = None
    platform_id: str | None = None
    package: str | None = None


class NewEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A domain event to append, with the stream version its writer expects.

    The stream is `model.stream_of(event)`; the entry becomes version
    `expected_version + 1` of it. `expected_version` 0 means a new stream.
    """

    id: str
    event: DomainEvent
    expected_version: int
    occurred_at: datetime


class AppendMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Who caused an append, and the request or message it belongs to."""

    actor: str
    correlation_id: str | None = None
    causation_id: str | None = None


# --- read models ---------------------------------------------------------------------------


class TenantReads(Protocol):
    async def get(self, tenant_id: str) -> Tenant | None: ...
    async def by_slug(self, slug: str) -> Tenant | None: ...
    async def list(self, page: PageRequest) -> list[Tenant]: ...


class ReceiverReads(Protocol):
    async def get(self, tenant_id: str, receiver_id: str) -> Receiver | None: ...
    async def by_triple(
        self, tenant_id: str, name: str, type_: str, version: str
    ) -> Receiver | None: ...
    async def get_many(
        self, tenant_id: str, receiver_ids: Collection[str]
    ) -> dict[str, Receiver]: ...
    async def list(
        self, tenant_id: str, where: ReceiverFilter, page: PageRequest
    ) -> list[Receiver]: ...


class EventReads(Protocol):
    async def get(self, tenant_id: str, event_id: str) -> Event | None: ...
    async def list(self, tenant_id: str, where: EventFilter, page: PageRequest) -> list[Event]: ...


class GroupReads(Protocol):
    async def get(self, tenant_id: str, group_id: str) -> Group | None: ...
    async def containing(self, tenant_id: str, receiver_ids: Collection[str]) -> list[Group]: ...
    async def list(self, tenant_id: str, where: GroupFilter, page: PageRequest) -> list[Group]: ...


class LatestReads(Protocol):
    """The latest event (by log order) of each receiver for each artifact."""

    async def get_many(
        self, tenant_id: str, receiver_ids: Collection[str], keys: Collection[Nvrpp]
    ) -> dict[tuple[str, Nvrpp], Event]: ...


class CompletionReads(Protocol):
    async def list(
        self, tenant_id: str, group_id: str, where: CompletionFilter, page: PageRequest
    ) -> list[Completion]: ...


class LogReads(Protocol):
    async def read(self, tenant_id: str, after: int = 0, limit: int = 1000) -> list[Envelope]:
        """Entries with position > `after`, in position order: never one skipped, never twice."""
        ...

    async def read_stream(self, tenant_id: str, stream: str) -> list[Envelope]: ...
    async def stream_version(self, tenant_id: str, stream: str) -> int: ...
    async def head(self, tenant_id: str) -> int:
        """The last committed position of the tenant's log (0 when empty)."""
        ...

    async def heads(self) -> dict[str, int]:
        """Every tenant's last committed position, by tenant id (tenants with a log only)."""
        ...

    async def checkpoint(self, tenant_id: str) -> int:
        """The position the inline read models have applied for the tenant."""
        ...


class IdempotencyReads(Protocol):
    """Idempotency-Key records (`core.domain.idempotency`), by key space and key."""

    async def get(self, scope: str, key: str) -> Record | None:
        """The record of that key, expired or not (None: there is none)."""
        ...


class IdempotencyWrites(IdempotencyReads, Protocol):
    """The records of a write transaction: stored with its writes, or not at all."""

    def add(self, record: Record) -> None:
        """Store `record` in this transaction: with the next `append` (the same statement
        where the backend can), or before the commit. Any number of records, of any key
        space, may join one transaction (a group commit's requests). When a record of the
        same key was committed first, the write raises `KeyInUse` and nothing is stored."""
        ...

    async def remove(self, scope: str, key: str) -> None:
        """Delete the record of that key (an expired one about to be replaced)."""
        ...


class ReadTx(Protocol):
    """One consistent snapshot of the store."""

    @property
    def tenants(self) -> TenantReads: ...
    @property
    def receivers(self) -> ReceiverReads: ...
    @property
    def events(self) -> EventReads: ...
    @property
    def groups(self) -> GroupReads: ...
    @property
    def latest(self) -> LatestReads: ...
    @property
    def completions(self) -> CompletionReads: ...
    @property
    def log(self) -> LogReads: ...
    @property
    def idempotency(self) -> IdempotencyReads: ...

    async def tenant_ids(self) -> list[str]: ...

    async def digest(self) -> str:
        """A checksum of every read model's content (not the log): equal stores, equal digests."""
        ...


class WriteTx(ReadTx, Protocol):
    """A transaction holding one tenant's writer lock. Commits when its block ends cleanly."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def idempotency(self) -> IdempotencyWrites: ...

    async def append(self, entries: Sequence[NewEntry], meta: AppendMeta) -> list[int]:
        """Append to the tenant's log and apply the inline read models: `append_many` of
        one part."""
        ...

    async def append_many(
        self, parts: Sequence[tuple[Sequence[NewEntry], AppendMeta]]
    ) -> list[int]:
        """Append the entries of every part, in order, each part with its own metadata (the
        requests of one group commit), and apply the inline read models: one write.

        Returns the positions given to the entries, in order: consecutive, after the
        tenant's head. Raises `StreamVersionConflict` when an entry's expected version
        is not its stream's current version, `Conflict` when a unique rule is broken.
        """
        ...


class Store(Protocol):
    def read(self) -> AbstractAsyncContextManager[ReadTx]: ...

    def read_stale(self, tenant_id: str) -> AbstractAsyncContextManager[ReadTx]:
        """A read that may be a little behind (from a read replica), for what decides
        nothing: lists, gets, message pages. Never behind what this process has written
        for the tenant (read-your-writes). A store without a replica reads as `read`."""
        ...

    def write(self, tenant_id: str) -> AbstractAsyncContextManager[WriteTx]: ...

    def rebuild(
        self, tenant_id: str | None = None, after: int = 0
    ) -> AbstractAsyncContextManager[Rebuild]:
        """Empty the read models (every tenant's, or `tenant_id`'s alone) and replay into
        them, in one transaction that commits at the block's end. It holds the writer lock
        of every tenant it rebuilds (their writers wait); readers go on reading the old
        read models until it commits. With `after` (and `tenant_id`), only what the log
        entries after that position made is replaced: `replay` applies those again. (What
        is observable is the end state: a store may leave in place the rows that the replay
        makes as they already are.)"""
        ...

    async def replay_done(self, run: str) -> set[str]:
        """The tenants a replay run (`run`: what identifies it) has finished so far."""
        ...

    async def replay_finished(self, run: str) -> None:
        """Forget a run's progress: it is over."""
        ...

    async def purge_idempotency(self, before: datetime, limit: int) -> int:
        """Delete at most `limit` Idempotency-Key records made at or before `before`, in one
        short transaction; how many were deleted. Nothing else is ever evicted."""
        ...

    async def close(self) -> None: ...


class Rebuild(Protocol):
    async def tenant_ids(self) -> list[str]: ...
    def log(self, tenant_id: str, batch: int = 1000) -> AsyncIterator[list[Envelope]]: ...
    async def apply(self, tenant_id: str, envelopes: Sequence[Envelope]) -> None: ...

    def replay(self, tenant_id: str, batch: int = 1000) -> AsyncIterator[int]:
        """Apply the tenant's log (all of it, or what follows the rebuild's `after`), as
        `log` then `apply` would, without making envelopes; yields the number of entries
        applied after each batch."""
        ...

    async def mark_done(self, run: str, tenant_id: str) -> None:
        """Record, in this transaction, that `run` has rebuilt `tenant_id`."""
        ...


# --- the rest of the world -----------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class ReceiverCache(Protocol):
    """Receivers with their compiled schemas, by (tenant id, receiver id).

    Safe to keep without invalidation: a receiver is never changed or deleted.
    Only found receivers are cached, so one created later is seen at once.
    """

    def get(self, tenant_id: str, receiver_id: str) -> tuple[Receiver, CompiledSchema] | None: ...
    def put(self, receiver: Receiver, compiled: CompiledSchema) -> None: ...


class IdSource(Protocol):
    def new_id(self) -> str:
        """A new ULID, greater than every one this source made before."""
        ...

    def new_ids(self, count: int) -> list[str]:
        """`count` new ULIDs, increasing, greater than every one made before: what `count`
        calls of `new_id` answer (a batch's events and log entries), at less cost."""
        ...


class Randomness(Protocol):
    def random(self) -> float:
        """A number in [0, 1) (jitter: need not be unpredictable)."""
        ...

    def token_bytes(self, count: int) -> bytes:
        """`count` bytes from a cryptographically secure source (secrets)."""
        ...


WriteT = TypeVar("WriteT")
ResultT = TypeVar("ResultT")


class Combiner(Protocol):
    """Group commit's queue (`core.domain.groupcommit`): per key (a tenant), one group of
    submitted writes runs at a time, and writes that arrive meanwhile wait to form the next.

    `submit(key, write, size, run)` returns what `run` answered for `write`, or raises the
    exception it answered. `run` gets a group of writes in arrival order (its own write
    alone when the key is idle: no waiting then) and answers one result or exception per
    write, in order; it must never raise for one write's sake. Writes of one key are never
    run by two groups at once in this process. A group of several writes runs to its end
    even if the submitter whose task runs it is cancelled: the others wait for it.
    """

    async def submit(
        self,
        key: str,
        write: WriteT,
        size: int,
        run: Callable[[Sequence[WriteT]], Awaitable[Sequence[ResultT | Exception]]],
    ) -> ResultT: ...


# --- identity, access and secrets ------------------------------------------------------------
# Each call is its own transaction: identity changes are single records, and the one
# multi-step change (rotating a refresh token) is a compare-and-set. `tenant_id` None
# means the platform (its administrators, its secrets, its audit log).


class UserStore(Protocol):
    async def add(self, user: User, record: Record | None = None) -> None:
        """Raises `Conflict` when the username is taken in the user's tenant. With `record`,
        the Idempotency-Key record is stored in the same transaction (an expired one of the
        same key is replaced; a live one: `KeyInUse`, and nothing is stored)."""
        ...

    async def get(self, tenant_id: str | None, user_id: str) -> User | None: ...
    async def by_username(self, tenant_id: str | None, username: str) -> User | None: ...

    async def update(self, user: User) -> None:
        """Replace a user that exists (same id and tenant); a vanished one is not recreated."""
        ...

    async def delete(self, tenant_id: str | None, user_id: str) -> bool:
        """Whether there was such a user in that tenant."""
        ...

    async def list(self, tenant_id: str | None, page: PageRequest) -> list[User]: ...


class ApiKeyStore(Protocol):
    async def add(self, key: ApiKey, record: Record | None = None) -> None:
        """Raises `Conflict` when the prefix is taken (the caller makes another key). With
        `record`, as `UserStore.add` (a live record of the key: `KeyInUse`)."""
        ...

    async def get(self, tenant_id: str | None, key_id: str) -> ApiKey | None: ...

    async def find(self, key_id: str) -> ApiKey | None:
        """The key with that id in whichever scope (the operator's command line)."""
        ...

    async def by_prefix(self, prefix: str) -> ApiKey | None: ...
    async def update(self, key: ApiKey) -> None: ...
    async def list(self, tenant_id: str | None, page: PageRequest) -> list[ApiKey]: ...

    async def any_platform_key(self) -> bool:
        """Whether a platform key was ever made (revoked ones count): bootstrap runs once."""
        ...


class RefreshStore(Protocol):
    async def start(self, family: RefreshFamily, token: RefreshToken) -> None: ...

    async def find(self, token_hash: str) -> tuple[RefreshFamily, RefreshToken] | None:
        """The token with that hash and its family."""
        ...

    async def rotate(self, used: RefreshToken, fresh: RefreshToken) -> bool:
        """Compare-and-set: mark `used` used only if it is still current, and add `fresh`.

        False (and nothing written) when another request used it first: the caller
        treats that as a reuse.
        """
        ...

    async def save_family(self, family: RefreshFamily) -> None: ...

    async def revoke_subject(
        self, tenant_id: str | None, subject: str, *, at: datetime, reason: str
    ) -> int:
        """Revoke every active family of a principal (deleted, disabled, new password)."""
        ...


class RevocationStore(Protocol):
    """Revoked access-token ids, kept until the token would have expired anyway.

    `is_revoked` raises when it cannot answer; the caller then refuses (fail closed).
    """

    async def revoke(self, jti: str, expires_at: datetime) -> None: ...
    async def is_revoked(self, jti: str) -> bool: ...
    async def purge(self, now: datetime) -> int: ...


class SecretRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a secret: its rotation state and its value, sealed (never in clear).

    `public_id` is what may be shown of it (a signing key's `kid`), so that a retired
    version is recognized without opening it.
    """

    tenant_id: str | None
    name: str
    version: SecretVersion
    envelope: bytes
    public_id: str | None = None


class SecretStore(Protocol):
    async def versions(self, tenant_id: str | None, name: str) -> list[SecretRecord]:
        """Every version of the secret, in version order."""
        ...

    async def save(
        self,
        tenant_id: str | None,
        name: str,
        before: Sequence[SecretVersion],
        after: Sequence[SecretRecord],
    ) -> None:
        """In one transaction: add the versions of `after` that `before` lacks, update the
        others whose state changed, each only if its stored state is still the one in
        `before`. Raises `Conflict` (and writes nothing) when another writer came first."""
        ...

    async def reseal(
        self, tenant_id: str | None, name: str, version: int, before: bytes, after: bytes
    ) -> bool:
        """Compare-and-set of a version's envelope (a master-key rewrap): replace `before`
        with `after`; False (and nothing written) when the stored envelope is not `before`.
        `save` never changes an existing version's envelope: only this does."""
        ...

    async def names(self) -> list[tuple[str | None, str]]: ...


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Exact-match filters, ANDed; `since` inclusive, `until` exclusive, on `at`."""

    action: str | None = None
    actor: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditLog(Protocol):
    """Append-only: there is no way to change a record, nor to remove one but by age
    (`purge`, the retention policy)."""

    async def append(self, record: AuditRecord) -> None: ...

    async def purge(self, before: datetime, limit: int) -> int:
        """Delete at most `limit` records (of every tenant) older than `before`, oldest
        first; how many were deleted."""
        ...

    async def list(
        self, tenant_id: str | None, where: AuditFilter, page: PageRequest
    ) -> list[AuditRecord]: ...


class IdentityStore(Protocol):
    @property
    def users(self) -> UserStore: ...
    @property
    def api_keys(self) -> ApiKeyStore: ...
    @property
    def refresh(self) -> RefreshStore: ...
    @property
    def revocations(self) -> RevocationStore: ...
    @property
    def secrets(self) -> SecretStore: ...
    @property
    def audit(self) -> AuditLog: ...

    async def close(self) -> None: ...


# --- the cryptography the identity use cases need (adapters.crypto) ----------------------------


class PasswordHasher(Protocol):
    """A memory-hard password hash; slow on purpose, so its calls leave the event loop."""

    async def hash(self, password: str) -> str: ...
    async def verify(self, password: str, encoded: str) -> bool: ...

    async def verify_dummy(self, password: str) -> bool:
        """Spend the time of a verification and answer False (no such user)."""
        ...

    def needs_rehash(self, encoded: str) -> bool: ...


class MintedApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A new key: `text` is shown once and never stored; `prefix` and `hash` are."""

    text: str
    prefix: str
    hash: str


class MintedRefreshToken(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    hash: str


class BearerSecrets(Protocol):
    def new_api_key(self) -> MintedApiKey: ...
    def verify_api_key(self, text: str, stored_hash: str) -> bool: ...
    def new_refresh_token(self) -> MintedRefreshToken: ...
    def hash_refresh_token(self, text: str) -> str: ...


class SecretSealer(Protocol):
    """Envelope encryption under the master key. `open` raises on a wrong master key or
    any altered byte; it never returns something else."""

    @property
    def key_id(self) -> str:
        """The id of the master key that seals (safe to show)."""
        ...

    def sealed_with(self, envelope: bytes) -> str:
        """The id of the master key an envelope was sealed under."""
        ...

    def seal(
        self, plaintext: bytes, *, tenant_id: str | None, name: str, version: int
    ) -> bytes: ...
    def open(self, envelope: bytes, *, tenant_id: str | None, name: str, version: int) -> bytes: ...


class NewSigningKey(msgspec.Struct, frozen=True, kw_only=True):
    material: bytes
    kid: str


class TokenSigner(Protocol):
    """Signs and verifies access tokens with the key set it was last loaded with."""

    @property
    def ttl(self) -> timedelta: ...

    def new_key(self) -> NewSigningKey: ...

    def load(
        self,
        keys: Sequence[tuple[SecretVersion, bytes]],
        retired: Collection[str] = (),
    ) -> None:
        """The key set of these versions and their (opened) material; `retired`: kids of
        retired versions, so that a token under one is told from a stranger's."""
        ...

    def issue(self, principal: Principal, *, jti: str, now: datetime) -> str: ...
    def verify(self, token: str, *, now: datetime) -> Claims | Refusal: ...
    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]: ...


class MessageSink(Protocol):
    """Where a tenant's messages are published (a Redis stream per tenant, ...).

    Idempotent by position: a message at or below the sink's last position is not
    added again, so publishers may repeat themselves, or run side by side."""

    async def last_position(self, tenant_slug: str) -> int:
        """The log position of the last message the sink holds for the tenant (0: none)."""
        ...

    async def publish(self, tenant_slug: str, messages: Sequence[Positioned]) -> None:
        """Add `messages` (in position order) after the sink's last position."""
        ...


class SharedRateLimiter(Protocol):
    """Rate limits kept where every server process sees them (Redis), on that store's clock.

    `take` is atomic: of any number of processes asking at once, no more are admitted
    than the rate allows. It raises on any failure (unreachable, slow, refused): the
    caller then decides on its own (`core.usecases.ratelimits`)."""

    async def take(self, bucket: str, rate: Rate) -> float:
        """Admit one request of `bucket` at `rate`: 0.0, or (refused) the seconds until
        one would be admitted."""
        ...

    async def close(self) -> None: ...


# --- outgoing webhooks (adapters.webhooks) -----------------------------------------------------


class WebhookRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt to deliver: POST `body` to `url` with exactly `headers` (the sender adds
    only Host and Content-Length)."""

    url: str
    headers: list[tuple[str, str]]
    body: bytes
    timeout_seconds: float


#: Why an attempt got no HTTP answer.
SendFailure = Literal["refused", "dns", "connect", "tls", "timeout", "protocol"]


class WebhookAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt came to. `status_code` None: no HTTP answer, `failure` says why and
    `error` says it in one line for people (never a secret, never the body sent)."""

    status_code: int | None
    duration_ms: float
    #: The answer's raw `Retry-After` header, if any.
    retry_after: str | None = None
    #: The start of the answer's body, at most the sender's excerpt limit, decoded leniently.
    excerpt: str = ""
    failure: SendFailure | None = None
    error: str | None = None


class WebhookSender(Protocol):
    """POSTs webhooks through the address guard: a target that resolves to a refused
    network is never connected to (`failure="refused"`). Redirects are never followed:
    a 3xx is an answer like any other."""

    async def send(self, request: WebhookRequest) -> WebhookAnswer:
        """Never raises for what the target or the network does; only for programming errors."""
        ...

    async def close(self) -> None: ...


# --- subscriptions and deliveries (adapters.memory.delivery, adapters.sql.delivery) ------------
# Each call is its own transaction. The dispatcher's checkpoint of a tenant moves only with
# the deliveries it created (`DeliveryStore.dispatch`), and a deliverer's result is written
# only while its claim still holds the delivery (`finish`: the fence).


class NewDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A message (its encoded CloudEvent) to deliver to one subscription."""

    id: str
    tenant_id: str
    subscription_id: str
    message_id: str
    message_type: str
    position: int
    ordering_key: str | None = None
    body: bytes
    message_time: datetime
    #: The message's entry's (see `Positioned`).
    correlation_id: str | None = None
    causation_id: str | None = None


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery a deliverer holds, with what its attempt needs. `claim` is the fence:
    the claim's token, which `finish` and `release` must present."""

    delivery: Delivery
    body: bytes
    subscription: Subscription
    claim: str


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt leaves behind: its record (the store numbers it), the delivery's
    next state, and what it says about the subscription."""

    attempt: Attempt
    status: DeliveryStatus
    #: Pending: when it is due again; finished: None.
    next_attempt_at: datetime | None
    #: True: failing (since the attempt, unless failing already); False: it succeeds again;
    #: None: no change (what the deliverer saw of the subscription says so already).
    failing: bool | None
    #: Disable the subscription (if enabled) for this reason.
    disable: str | None = None


class DeliveryCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Every tenant's together: what the metrics show."""

    pending: int
    delivering: int
    dead: int
    disabled_subscriptions: int


class SubscriptionStore(Protocol):
    async def add(
        self, subscription: Subscription, secret: SecretRecord, record: Record | None = None
    ) -> Subscription:
        """Store a new subscription with the first version of its secret; answers it as
        stored. Its `start_position` becomes the greater of the one given (the tenant's
        log head) and the tenant's dispatch checkpoint, read under the dispatcher's lock:
        the dispatcher has either passed no message after the start yet, or it sees the
        subscription before it passes one. With `record`, the
        Idempotency-Key record is stored in the same transaction (an expired one of the
        same key is replaced; a live one: `KeyInUse`, and nothing is stored)."""
        ...

    async def get(self, tenant_id: str, subscription_id: str) -> Subscription | None: ...
    async def update(self, before: Subscription, after: Subscription) -> bool:
        """Write what people change (name, url, description, enabled, filter, ordering,
        disabled_reason, failing_since, updated_at), only if the stored one is still
        `before` (its `updated_at`): False when another writer came first or it is gone."""
        ...

    async def delete(self, tenant_id: str, subscription_id: str) -> bool:
        """Remove it with its secrets, deliveries and attempts; whether there was one."""
        ...

    async def secrets(self, tenant_id: str, subscription_id: str) -> list[SecretRecord]:
        """Every version of its secret, in version order."""
        ...

    async def save_secrets(
        self,
        tenant_id: str,
        subscription_id: str,
        before: Sequence[SecretVersion],
        after: Sequence[SecretRecord],
        record: Record | None = None,
    ) -> None:
        """As `SecretStore.save`: compare-and-set; `Conflict` when another writer came first.
        With `record`, as `add`."""
        ...

    async def unannounced(self) -> list[Subscription]:
        """Subscriptions the registry disabled more often than their log announced."""
        ...

    async def announce(self, tenant_id: str, subscription_id: str, announced: int) -> None:
        """Record that `announced` disables have been announced (never lowers it)."""
        ...

    async def list(self, tenant_id: str, page: PageRequest) -> list[Subscription]: ...


class DeliveryStore(Protocol):
    @property
    def subscriptions(self) -> SubscriptionStore: ...

    # --- the dispatcher ---

    async def checkpoints(self) -> dict[str, int]:
        """Every tenant's dispatch checkpoint (tenants with a subscription, ever)."""
        ...

    async def lease_dispatch(
        self, tenant_id: str, dispatcher: str, now: datetime, until: datetime
    ) -> int | None:
        """Take (or keep) the tenant's dispatching until `until`, and answer its checkpoint;
        None while another dispatcher's lease runs (or the tenant has no checkpoint)."""
        ...

    async def dispatch(
        self,
        tenant_id: str,
        expected: int,
        to: int,
        make: Callable[[Sequence[Subscription]], Sequence[NewDelivery]],
        now: datetime,
    ) -> int | None:
        """In one transaction: move the checkpoint from `expected` to `to` and add the
        deliveries `make` builds from the tenant's subscriptions as they are in that
        transaction (due at `now`; one that exists already, made by a replay, is left as
        it is); answers how many were added. None (nothing written) when the
        checkpoint is not at `expected`: another dispatcher came first."""
        ...

    # --- deliverers ---

    async def claim(
        self,
        *,
        claim: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        retries: bool,
        room: int,
        rooms: Mapping[str, int],
        ordering_since: datetime,
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries of enabled subscriptions to `claim`, until
        `lease_until`, soonest due first. Due: pending with `next_attempt_at <= now`.
        `retries`: those attempted before (else the never attempted). At most
        `rooms[subscription]` (default `room`) of one subscription. A delivery with an
        `ordering_key` waits while an earlier one (by position) of its subscription and key
        is pending or delivering, unless it was created before `ordering_since`."""
        ...

    async def finish(self, delivery_id: str, claim: str, outcome: Outcome) -> bool:
        """Record an attempt and its outcome, if `claim` still holds the delivery: False
        (nothing written) when it does not (its lease lapsed and it was expired or taken
        again, or its subscription was deleted)."""
        ...

    async def release(self, delivery_id: str, claim: str, now: datetime) -> bool:
        """Hand a claimed delivery back unattempted (due at `now`), if `claim` holds it."""
        ...

    async def expire(self, now: datetime) -> int:
        """Deliveries whose lease lapsed before `now` (their deliverer died or hangs): back
        to pending, due at `now`; answers how many. A late finish of theirs is refused."""
        ...

    async def next_due(self, retries: bool) -> datetime | None:
        """When the next pending delivery of an enabled subscription is due, of those never
        attempted or (`retries`) of those attempted before; None: there is none."""
        ...

    def mark(self) -> int:
        """Where this store's wake-ups stand, for `wait(since=...)`: taken before a claim,
        so that deliveries made while it ran are not slept through."""
        ...

    async def wait(self, seconds: float, since: int | None = None) -> None:
        """Return when deliveries may have become due (made, requeued, enabled) since the
        `mark` `since` (at once if they have; None: since the call), or after `seconds`;
        other processes on the same database count where the backend can tell
        (PostgreSQL: LISTEN/NOTIFY)."""
        ...

    # --- people ---

    async def requeue(
        self, deliveries: Sequence[NewDelivery], now: datetime, record: Record | None = None
    ) -> int:
        """Replay: add each delivery, or send an existing one of the same subscription and
        message again (succeeded or dead: pending, due at `now`, a new round); answers
        how many were added or sent again. With `record`, as `SubscriptionStore.add`."""
        ...

    async def redrive(
        self,
        tenant_id: str,
        subscription_id: str,
        since: datetime | None,
        until: datetime | None,
        now: datetime,
        *,
        record: Callable[[int], Record] | None = None,
    ) -> int:
        """Dead deliveries of messages of [since, until) back to pending, due at `now`.
        With `record`, the Idempotency-Key record of the answer (how many) is stored in
        the same transaction, as `SubscriptionStore.add`'s."""
        ...

    async def get(
        self, tenant_id: str, subscription_id: str, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]] | None: ...

    async def attempts_of(
        self, tenant_id: str, delivery_ids: Collection[str]
    ) -> dict[str, list[Attempt]]:
        """The attempts of each of the tenant's deliveries among `delivery_ids`, oldest first,
        in one read (a page of deliveries with their attempts); a delivery never attempted,
        and an id of no delivery of the tenant, are left out."""
        ...

    async def counts(self) -> DeliveryCounts: ...
    async def close(self) -> None: ...

    async def list(
        self,
        tenant_id: str,
        subscription_id: str,
        status: DeliveryStatus | None,
        page: PageRequest,
    ) -> list[Delivery]: ...


# --- the commit feed -------------------------------------------------------------------------


class CommitWatch(Protocol):
    """One caller's view of a tenant's commits, for a bounded time (see `CommitFeed.watch`)."""

    async def wait(self, after: int) -> bool:
        """Until the tenant's log passes position `after` (True) or the watch's time is up
        (False, at once from then on).

        True may also mean "look again": the feed may have missed commits (its database
        connection was lost and is back), so the caller reads what it waits on again and,
        if that is still not there, waits again from the position it read."""
        ...


class CommitsWatch(Protocol):
    """Every tenant's commits, for as long as the block runs (see `CommitFeed.watch_all`)."""

    async def wait(self, seconds: float) -> bool:
        """Until a commit of any tenant that this watch has not told of yet (True), or
        `seconds` passed without one (False). A commit made while nobody waited (during a
        pass over the logs) is remembered: the next `wait` returns True at once, so a
        reader that passes over the logs and then waits never misses one.

        True may also mean "look again": the feed may have missed commits."""
        ...


class CommitFeed(Protocol):
    """Wake-ups when a tenant's log grows, written by this process or another on the same
    store: what a long poll waits on instead of asking the store in a loop.

    The way to use it without missing a commit: enter `watch`, read (position p and what
    you wait for, in one snapshot), and `wait(p)` while it is not there. Every commit that
    is not in a snapshot taken inside the block wakes the watch.
    """

    def watch(
        self, tenant_id: str, seconds: float | None
    ) -> AbstractAsyncContextManager[CommitWatch]:
        """Watch the tenant's commits for at most `seconds` (None: until the block ends)."""
        ...

    def watch_all(self) -> AbstractAsyncContextManager[CommitsWatch]:
        """Watch every tenant's commits until the block ends: what a reader that follows
        every log (the delivery dispatcher) waits on between its passes."""
        ...
