"""The DeliveryStore port over SQLite and PostgreSQL, on the drivers themselves.

Statements come from `adapters.sql.delivery_queries`; connections and transactions from
`adapters.sql.drivers`. Every method is one transaction, but finishes: those that arrive
while others are being written are written together (`finish`). Subscriptions and the
rows read back into the domain's values are in `adapters.sql.delivery_subscriptions`.

SQLite shares the SqlStore's `SqliteDatabase` when it is given one (`connect(share=...)`):
the process then has one writer connection, and the dispatcher's and deliverers' writes
queue on the same lock as the API's instead of retrying on SQLite's file lock.
PostgreSQL gets pools of its own, so that delivery work never waits for the API's
connections, nor the API for delivery's: one for what people do (subscriptions and their
secrets, replays, redrives, reading deliveries), one for the dispatcher's and deliverers'
bookkeeping (dispatch, claims, finishes, releases, expiries). The latter runs with
`synchronous_commit = off`: a commit does not wait for its WAL flush (an fsync, often
the longest part of a finish). A database crash may then lose the last fraction of a
second of that bookkeeping, and losing it is always safe: a lost dispatch took its
checkpoint's move with it (the messages are dispatched again), a lost claim or finish
leaves the delivery to be attempted again (a duplicate with the same webhook-id: at
least once still holds). What people write is flushed as usual.

Concurrency
    - The dispatcher's checkpoint row of a tenant is the lock that orders a dispatch and
      a new subscription (`SubscriptionStore.add` reads the start under it): PostgreSQL
      locks the row (`UPDATE ... WHERE position = expected`, `SELECT ... FOR UPDATE`),
      SQLite has one writer.
    - Claims: PostgreSQL reads the due index in order with `FOR UPDATE SKIP LOCKED`
      (claims made at once look at different rows), picks fairly (at most `room` per
      subscription) and leases them, in one statement; SQLite reads candidates, picks
      and leases them in one transaction under its one writer.
    - A finish or a release is written only while the delivery is `delivering` under the
      same claim token (the fence).
    - Wake-ups: PostgreSQL transactions that make deliveries due send `NOTIFY` (delivered
      at commit) on `waypost_deliveries`, which `wait` LISTENs to on a connection of its
      own; every backend also wakes this process's waiters at once.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import asyncpg

from adapters.groupcommit import Lanes
from adapters.signal import Signal
from adapters.sql.availability import Availability
from adapters.sql.delivery_queries import (
    CHANNEL,
    DELIVERY,
    DeliveryStatements,
    catalogue,
)
from adapters.sql.delivery_subscriptions import (
    SqlSubscriptions,
    attempt_of,
    delivery_of,
    subscription_of,
)
from adapters.sql.drivers import BUSY_WAIT_LIMIT, Connection, PgDatabase, Row, SqliteDatabase
from adapters.sql.engine import create_engine, normalize_url, split_pg_options
from adapters.sql.observe import ObservedConnection, StatementObserver
from adapters.sql.queries import Query
from adapters.sql.statistics import Statistics
from adapters.sql.store import SqlStore
from adapters.sql.store_reads import Codec, _PgCodec, _SqliteCodec
from core.domain.delivery import Attempt, Delivery, DeliveryStatus
from core.domain.groupcommit import GroupPolicy
from core.domain.idempotency import Record, expired_before, in_use
from core.domain.subscriptions import Subscription
from core.ports import (
    Claimed,
    DeliveryCounts,
    NewDelivery,
    Outcome,
    PageRequest,
)

__all__ = ["SqlDeliveries"]

log = logging.getLogger("waypost.delivery")

_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
#: Connections a PostgreSQL delivery store keeps at most: for what people do (subscriptions,
#: secrets, replays, redrives, reading deliveries), and for delivery's own bookkeeping.
PEOPLE_CONNECTIONS = 4
WORK_CONNECTIONS = 8
_FOREVER = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC))
_DELIVERY_COLUMNS = len(DELIVERY)
_UNIQUE = (asyncpg.UniqueViolationError, sqlite3.IntegrityError)
#: Finishes written together at most (one statement, or one transaction).
MAX_FINISHES = 64
#: A finish: the delivery, the claim that must still hold it, what the attempt came to.
_Finish = tuple[str, str, Outcome]


def _pool(url: str, size: int, settings: dict[str, str] | None = None) -> PgDatabase:
    """A pool of `size` connections; `settings`: server settings on top of the URL's own
    (`options`, `application_name`)."""
    options: dict[str, Any] = {"pool_size": size, "max_overflow": 0}
    if settings:
        _, given = split_pg_options(normalize_url(url))
        options["connect_args"] = {
            "server_settings": {**given.get("server_settings", {}), **settings}
        }
    return PgDatabase(create_engine(url, isolation_level="AUTOCOMMIT", **options), size)


class SqlDeliveries:
    """DeliveryStore port over PostgreSQL (asyncpg) or SQLite (sqlite3)."""

    def __init__(
        self,
        db: PgDatabase | SqliteDatabase,
        *,
        owned: bool,
        availability: Availability,
        dsn: tuple[str, dict[str, Any]] | None = None,
        work: PgDatabase | None = None,
    ) -> None:
        self._db = db
        self._work = work or db
        self._owned = owned
        #: Shared with the other stores on the database: one log line per outage.
        self.availability = availability
        #: PostgreSQL: the listener's DSN and asyncpg arguments (the URL's libpq options).
        self._dsn = dsn
        postgres = isinstance(db, PgDatabase)
        self._sql = catalogue("postgresql" if postgres else "sqlite")
        self._codec: Codec = _PgCodec if postgres else _SqliteCodec
        self._signal = Signal()
        self._listener: asyncpg.Connection | None = None
        self._listen_failed_at = 0.0
        self._listen_failing = False  # an outage was logged; its retries are not
        self._observer: StatementObserver | None = None
        self.subscriptions = SqlSubscriptions(self)
        # PostgreSQL: the deliveries' statistics follow this store's dispatches (until
        # autovacuum gets to it, the claim is planned for an empty table and reads every
        # due delivery instead of the first few); SQLite's planner did not need them
        self._statistics = (
            Statistics(partial(self._work.run, "ANALYZE deliveries"), background=True)
            if isinstance(self._work, PgDatabase)
            else None
        )
        self._finishes: Lanes = Lanes(GroupPolicy(max_writes=MAX_FINISHES, max_events=MAX_FINISHES))

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        share: SqlStore | None = None,
        availability: Availability | None = None,
        busy_timeout: float = BUSY_WAIT_LIMIT,
    ) -> SqlDeliveries:
        """A delivery store on the (migrated) database at `url`; SQLite shares `share`'s
        connections when given (the same database). `availability`: shared with the other
        stores on the database (else `share`'s); a database that cannot be reached or
        opened raises `Unavailable`."""
        if availability is None:
            availability = share.availability if share is not None else Availability(url)
        normalized = normalize_url(url)
        if normalized.get_backend_name() == "sqlite":
            if share is not None and isinstance(share.database, SqliteDatabase):
                return cls(share.database, owned=False, availability=availability)
            assert normalized.database is not None
            try:
                sqlite = SqliteDatabase(normalized.database, busy_timeout)
            except sqlite3.Error as exc:
                availability.raise_for(exc)
            return cls(sqlite, owned=True, availability=availability)
        db = _pool(url, PEOPLE_CONNECTIONS)
        work = _pool(url, WORK_CONNECTIONS, {"synchronous_commit": "off"})
        try:
            await db.run("SELECT 1")
            await work.run("SELECT 1")
        except BaseException as exc:
            await db.close()
            await work.close()
            availability.raise_for(exc)
        bare, args = split_pg_options(normalized)
        dsn = bare.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(db, owned=True, availability=availability, dsn=(dsn, args), work=work)

    @property
    def sql(self) -> DeliveryStatements:
        return self._sql

    def observe(self, observer: StatementObserver | None) -> None:
        """Pass every later statement through `observer` (slow-query log, spans), by its
        catalogue name; None: stop."""
        self._observer = observer if observer is not None and observer.active else None

    def _watched(self, conn: Connection) -> Connection:
        observer = self._observer
        return conn if observer is None else ObservedConnection(conn, observer)

    @contextmanager
    def _statement(self, query: Query) -> Iterator[None]:
        """Around a statement PostgreSQL runs on a pooled connection of its own (no
        transaction to wrap): observed, and its failures told apart, like the others."""
        observer = self._observer
        try:
            with nullcontext() if observer is None else observer.statement(query.name):
                yield
        except Exception as exc:
            self.availability.raise_for(exc)
        self.availability.ok()

    @property
    def codec(self) -> Codec:
        return self._codec

    @asynccontextmanager
    async def write(self, *, work: bool = False) -> AsyncIterator[Connection]:
        """A write transaction; `work`: the dispatcher's and deliverers' bookkeeping (on
        PostgreSQL, connections that do not wait for the commit to be flushed)."""
        db = self._work if work else self._db
        try:
            if isinstance(db, PgDatabase):
                async with db.transaction(_WRITE) as pg:
                    yield self._watched(pg)
            else:
                async with db.write() as conn:
                    yield self._watched(conn)
        except Exception as exc:
            self.availability.raise_for(exc)
        self.availability.ok()

    async def keep(self, conn: Connection, record: Record | None) -> None:
        """Store an Idempotency-Key record in `conn`'s transaction (the main store's table),
        in place of an expired one of the same key; a live one of the same key is
        `KeyInUse` (the transaction is rolled back)."""
        if record is None:
            return
        sql, time = self._sql, self._codec.time
        await conn.execute(
            sql.idempotency_drop_expired,
            (record.scope, record.key, time(expired_before(record.created_at))),
        )
        answer = record.answer
        try:
            await conn.execute(
                sql.idempotency_insert,
                (record.scope, record.key, record.fingerprint, answer.status,
                 answer.content_type, answer.location, answer.body, time(record.created_at)),
            )  # fmt: skip
        except _UNIQUE:
            conn.failed = True
            raise in_use() from None

    @asynccontextmanager
    async def read(self, *, work: bool = False) -> AsyncIterator[Connection]:
        db = self._work if work else self._db
        try:
            if isinstance(db, PgDatabase):
                async with db.transaction(_READ) as pg:
                    yield self._watched(pg)
            else:
                async with db.read() as conn:
                    yield self._watched(conn)
        except Exception as exc:
            self.availability.raise_for(exc)
        self.availability.ok()

    async def notify(self, conn: Connection) -> None:
        """Inside a transaction that makes deliveries due: wake other processes' deliverers
        at its commit (PostgreSQL); call `rang` after the commit for this process's."""
        if self._sql.postgres:
            await conn.execute(self._sql.notify, ())

    def rang(self) -> None:
        self._signal.ring()

    # --- the dispatcher ---

    async def checkpoints(self) -> dict[str, int]:
        async with self.read(work=True) as conn:
            rows = await conn.fetch(self._sql.checkpoints, ())
        return {row[0]: int(row[1]) for row in rows}

    async def lease_dispatch(
        self, tenant_id: str, dispatcher: str, now: datetime, until: datetime
    ) -> int | None:
        time = self._codec.time
        async with self.write(work=True) as conn:
            row = await conn.fetchrow(
                self._sql.lease_dispatch, (tenant_id, dispatcher, time(now), time(until))
            )
        return None if row is None else int(row[0])

    async def dispatch(
        self,
        tenant_id: str,
        expected: int,
        to: int,
        make: Callable[[Sequence[Subscription]], Sequence[NewDelivery]],
        now: datetime,
    ) -> int | None:
        sql, codec = self._sql, self._codec
        async with self.write(work=True) as conn:
            moved = await conn.fetchrow(sql.advance_checkpoint, (tenant_id, expected, to))
            if moved is None:
                return None
            rows = await conn.fetch(sql.tenant_subscriptions, (tenant_id,))
            made = make([subscription_of(row, codec) for row in rows])
            added = await self._insert(conn, made, now)
            if added:
                await self.notify(conn)
        if added:
            self.rang()
            if self._statistics is not None:
                await self._statistics.written(added)
        return added

    async def _insert(self, conn: Connection, made: Sequence[NewDelivery], now: datetime) -> int:
        if not made:
            return 0
        sql, time = self._sql, self._codec.time
        at = time(now)
        rows = [
            (n.id, n.tenant_id, n.subscription_id, n.message_id, n.message_type, n.position,
             n.ordering_key, n.body, "pending", 0, 0, False, at, None, None, None,
             time(n.message_time), at, None, None, n.correlation_id, n.causation_id)
            for n in made
        ]  # fmt: skip
        if sql.postgres:
            columns = [list(column) for column in zip(*rows, strict=True)]
            return len(await conn.fetch(sql.insert_deliveries, columns))
        added = 0
        for row in rows:
            added += await conn.fetchrow(sql.insert_delivery, row) is not None
        return added

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
        if limit < 1 or room < 1:
            return []
        sql, codec = self._sql, self._codec
        time = codec.time
        excluded = codec.ids([s for s, n in rooms.items() if n < 1])
        if isinstance(self._work, PgDatabase):  # one statement: atomic by itself
            given = [(s, n) for s, n in rooms.items() if n >= 1]
            query = sql.pg_claim[retries]
            with self._statement(query):
                rows = await self._work.fetch(
                    query,
                    (time(now), excluded, time(ordering_since), limit, [s for s, _ in given],
                     [n for _, n in given], room, limit, claim, time(lease_until)),
                )  # fmt: skip
            cut = _DELIVERY_COLUMNS + 1
            return self._claimed([(tuple(row)[:cut], tuple(row)[cut:]) for row in rows], claim, now)
        async with self.write(work=True) as conn:
            scan = limit * 4 + room
            candidates = await conn.fetch(
                sql.candidates[retries],
                (time(now), excluded, time(ordering_since), scan, room, scan),
            )
            chosen: list[str] = []
            taken: dict[str, int] = {}
            for delivery_id, subscription_id in candidates:
                if len(chosen) >= limit:
                    break
                if taken.get(subscription_id, 0) >= rooms.get(subscription_id, room):
                    continue
                taken[subscription_id] = taken.get(subscription_id, 0) + 1
                chosen.append(delivery_id)
            if not chosen:
                return []
            rows = await conn.fetch(
                sql.claim, (codec.ids(chosen), time(now), claim, time(lease_until))
            )
            ids = codec.ids({row[2] for row in rows})
            subs = {sub[1]: sub for sub in await conn.fetch(sql.subscriptions_by_ids, (ids,))}
        return self._claimed([(row, subs[row[2]]) for row in rows], claim, now)

    def _claimed(
        self, pairs: Sequence[tuple[Row, Row]], claim: str, now: datetime
    ) -> list[Claimed]:
        codec = self._codec
        claimed = [
            Claimed(
                delivery=delivery_of(d[:_DELIVERY_COLUMNS], codec),
                body=bytes(d[_DELIVERY_COLUMNS]),
                subscription=subscription_of(s, codec),
                claim=claim,
            )
            for d, s in pairs
        ]
        claimed.sort(key=lambda c: (c.delivery.next_attempt_at or now, c.delivery.position))
        return claimed

    async def finish(self, delivery_id: str, claim: str, outcome: Outcome) -> bool:
        """Finishes that arrive while others are being written are written together next
        (`adapters.groupcommit.Lanes`; one alone is written at once), each fenced by its
        own claim: on PostgreSQL one statement for those that leave their subscriptions as
        they are, on SQLite one transaction."""
        return await self._finishes.submit(
            "finish", (delivery_id, claim, outcome), 1, self._finish_group
        )

    async def _finish_group(self, group: Sequence[_Finish]) -> list[bool | Exception]:
        if not isinstance(self._work, PgDatabase):
            async with self.write(work=True) as conn:
                return [await self._sqlite_finish(conn, *finish) for finish in group]
        # Outcomes that change a subscription (its failing streak, a disable) go one by one:
        # the statement for many leaves subscriptions alone.
        together = [f for f in group if f[2].failing is None and f[2].disable is None]
        if len(together) < 2:
            together = []
        written = await self._pg_finish_many(self._work, together) if together else set()
        answers: list[bool | Exception] = []
        for finish in group:
            if finish in together:
                answers.append(finish[0] in written)
                continue
            try:
                answers.append(await self._pg_finish(self._work, *finish))
            except Exception as exc:  # this one's failure, not the others'
                answers.append(exc)
        return answers

    async def _pg_finish(
        self, db: PgDatabase, delivery_id: str, claim: str, outcome: Outcome
    ) -> bool:
        sql, time = self._sql, self._codec.time
        attempt = outcome.attempt
        next_at = None if outcome.next_attempt_at is None else time(outcome.next_attempt_at)
        clear = outcome.status == DeliveryStatus.SUCCEEDED
        with self._statement(sql.finish):
            row = await db.fetchrow(
                sql.finish,
                (delivery_id, claim, str(outcome.status), next_at, time(attempt.started_at),
                 attempt.duration_ms, attempt.status_code, attempt.error,
                 attempt.response_excerpt, clear, outcome.failing, outcome.disable),
            )  # fmt: skip
        return row is not None and int(row[0]) == 1

    async def _pg_finish_many(self, db: PgDatabase, group: Sequence[_Finish]) -> set[str]:
        sql, time = self._sql, self._codec.time
        columns: tuple[list[Any], ...] = tuple([] for _ in range(10))
        for delivery_id, claim, outcome in group:
            attempt = outcome.attempt
            next_at = outcome.next_attempt_at
            clear = outcome.status == DeliveryStatus.SUCCEEDED
            row = (delivery_id, claim, str(outcome.status),
                   None if next_at is None else time(next_at), time(attempt.started_at),
                   attempt.duration_ms, attempt.status_code, attempt.error,
                   attempt.response_excerpt, clear)  # fmt: skip
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        with self._statement(sql.finish_many):
            rows = await db.fetch(sql.finish_many, columns)
        return {row[0] for row in rows}

    async def _sqlite_finish(
        self, conn: Connection, delivery_id: str, claim: str, outcome: Outcome
    ) -> bool:
        sql, time = self._sql, self._codec.time
        attempt = outcome.attempt
        next_at = None if outcome.next_attempt_at is None else time(outcome.next_attempt_at)
        started = time(attempt.started_at)
        clear = outcome.status == DeliveryStatus.SUCCEEDED
        done = await conn.fetchrow(
            sql.finish_delivery,
            (delivery_id, claim, str(outcome.status), next_at, started,
             attempt.status_code, attempt.error, clear),
        )  # fmt: skip
        if done is None:
            return False
        tenant_id, subscription_id, number = done
        await conn.execute(
            sql.insert_attempt,
            (delivery_id, number, tenant_id, started, attempt.duration_ms,
             attempt.status_code, attempt.error, attempt.response_excerpt),
        )  # fmt: skip
        if outcome.failing is not None or outcome.disable is not None:
            await conn.execute(
                sql.finish_subscription,
                (tenant_id, subscription_id, started, outcome.failing, outcome.disable),
            )
        return True

    async def release(self, delivery_id: str, claim: str, now: datetime) -> bool:
        async with self.write(work=True) as conn:
            row = await conn.fetchrow(
                self._sql.release, (delivery_id, claim, self._codec.time(now))
            )
            if row is not None:
                await self.notify(conn)
        if row is not None:
            self.rang()
        return row is not None

    async def expire(self, now: datetime) -> int:
        async with self.write(work=True) as conn:
            rows = await conn.fetch(self._sql.expire, (self._codec.time(now),))
            if rows:
                await self.notify(conn)
        if rows:
            self.rang()
        return len(rows)

    async def next_due(self, retries: bool) -> datetime | None:
        async with self.read(work=True) as conn:
            row = await conn.fetchrow(self._sql.next_due, (retries,))
        return None if row is None or row[0] is None else self._codec.from_time(row[0])

    def mark(self) -> int:
        return self._signal.mark()

    async def wait(self, seconds: float, since: int | None = None) -> None:
        if self._dsn is not None:
            await self._listen()
        await self._signal.wait(seconds, since)

    async def _listen(self) -> None:
        """Keep a connection LISTENing (PostgreSQL); after a failure, try again at most
        every few seconds (the callers' poll keeps working meanwhile)."""
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return
        now = anyio.current_time()
        if now - self._listen_failed_at < 5.0:
            return
        assert self._dsn is not None
        dsn, args = self._dsn
        try:
            with anyio.fail_after(5):
                listener = await asyncpg.connect(dsn, **args)
            await listener.add_listener(CHANNEL, self._heard)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self._listen_failed_at = now
            # Once per outage, as the stores log theirs (`adapters.sql.availability`).
            level = logging.DEBUG if self._listen_failing else logging.WARNING
            log.log(level, "cannot LISTEN for new deliveries (%s); polling meanwhile", exc)
            self._listen_failing = True
            return
        if self._listen_failing:
            self._listen_failing = False
            log.info("listening for new deliveries again")
        self._listener = listener
        self._signal.ring()  # anything made while nobody listened: look now

    def _heard(self, *_: object) -> None:
        self._signal.ring()

    # --- people ---

    async def requeue(
        self, deliveries: Sequence[NewDelivery], now: datetime, record: Record | None = None
    ) -> int:
        if not deliveries and record is None:
            return 0
        sql, time = self._sql, self._codec.time
        at = time(now)
        changed = 0
        async with self.write() as conn:
            await self.keep(conn, record)
            for n in deliveries:
                row = await conn.fetchrow(
                    sql.requeue,
                    (n.id, n.tenant_id, n.subscription_id, n.message_id, n.message_type,
                     n.position, n.ordering_key, n.body, time(n.message_time), at,
                     n.correlation_id, n.causation_id),
                )  # fmt: skip
                changed += row is not None
            if changed:
                await self.notify(conn)
        if changed:
            self.rang()
        return changed

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
        time = self._codec.time
        lower, upper = since or _FOREVER[0], until or _FOREVER[1]
        async with self.write() as conn:
            rows = await conn.fetch(
                self._sql.redrive,
                (tenant_id, subscription_id, time(lower), time(upper), time(now)),
            )
            await self.keep(conn, None if record is None else record(len(rows)))
            if rows:
                await self.notify(conn)
        if rows:
            self.rang()
        return len(rows)

    async def get(
        self, tenant_id: str, subscription_id: str, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]] | None:
        codec = self._codec
        async with self.read() as conn:
            row = await conn.fetchrow(self._sql.delivery, (tenant_id, subscription_id, delivery_id))
            if row is None:
                return None
            attempts = await conn.fetch(self._sql.attempts, (delivery_id,))
        return delivery_of(row, codec), [attempt_of(a, codec) for a in attempts]

    async def attempts_of(
        self, tenant_id: str, delivery_ids: Collection[str]
    ) -> dict[str, list[Attempt]]:
        codec = self._codec
        ids = codec.ids(list(dict.fromkeys(delivery_ids)))
        async with self.read() as conn:
            rows = await conn.fetch(self._sql.attempts_of, (tenant_id, ids))
        found: dict[str, list[Attempt]] = {}
        for row in rows:
            attempt = attempt_of(row, codec)
            found.setdefault(attempt.delivery_id, []).append(attempt)
        return found

    async def counts(self) -> DeliveryCounts:
        async with self.read() as conn:
            statuses = {
                row[0]: int(row[1]) for row in await conn.fetch(self._sql.status_counts, ())
            }
            disabled = await conn.fetchrow(self._sql.disabled_count, ())
        return DeliveryCounts(
            pending=statuses.get("pending", 0),
            delivering=statuses.get("delivering", 0),
            dead=statuses.get("dead", 0),
            disabled_subscriptions=0 if disabled is None else int(disabled[0]),
        )

    async def close(self) -> None:
        if self._statistics is not None:
            await self._statistics.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(Exception):  # it is being thrown away
                await listener.close(timeout=5)
        if self._owned:
            await self._db.close()
            if self._work is not self._db:
                await self._work.close()

    async def list(
        self,
        tenant_id: str,
        subscription_id: str,
        status: DeliveryStatus | None,
        page: PageRequest,
    ) -> list[Delivery]:
        query = self._sql.deliveries_page(
            status=status is not None, order=page.order, after=page.after is not None
        )
        args: list[Any] = [tenant_id, subscription_id]
        if status is not None:
            args.append(str(status))
        if page.after is not None:
            args.append(page.after)
        args.append(page.limit)
        async with self.read() as conn:
            rows = await conn.fetch(query, args)
        return [delivery_of(row, self._codec) for row in rows]
