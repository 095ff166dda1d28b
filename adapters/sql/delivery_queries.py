"""The SQL of subscriptions and deliveries, in one catalogue: compiled once per dialect.

The same habit as `adapters.sql.queries` (whose `compile_query` turns each statement
into the driver's text and parameter order), for the tables of
`adapters.sql.delivery_tables`. Simple statements are Core constructs; the few that
PostgreSQL does in one round trip where SQLite takes several (a claim, a finish, a
dispatch's insert) are written out per dialect.

Sets of ids are ONE parameter: a `text[]` on PostgreSQL, a JSON array (`json_each`) on
SQLite, so one text serves any number of them.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect

from adapters.sql import delivery_tables as t
from adapters.sql.queries import IDEMPOTENCY, Query, compile_query
from adapters.sql.tables import idempotency_records

# The column order of the rows the store reads and writes (delivery_tables.py's order).
SUBSCRIPTION = ("tenant_id", "id", "name", "url", "description", "enabled", "filter",
                "ordering", "created_at", "updated_at", "disabled_reason", "start_position",
                "failing_since", "disables", "announced")  # fmt: skip
SECRET = ("tenant_id", "subscription_id", "version", "state", "created_at", "activated_at",
          "demoted_at", "verify_until", "retired_at", "envelope")  # fmt: skip
DELIVERY_ALL = ("id", "tenant_id", "subscription_id", "message_id", "message_type", "position",
                "ordering_key", "body", "status", "attempts", "round_attempts", "attempted",
                "next_attempt_at", "last_attempt_at", "last_status_code", "last_error",
                "message_time", "created_at", "claimed_by", "lease_until", "correlation_id",
                "causation_id")  # fmt: skip
#: What a delivery reads as (no body, no `attempted`: it is `attempts > 0`).
DELIVERY = tuple(c for c in DELIVERY_ALL if c not in ("body", "attempted"))
ATTEMPT = ("delivery_id", "number", "tenant_id", "started_at", "duration_ms", "status_code",
           "error", "response_excerpt")  # fmt: skip

for _table, _columns in (
    (t.subscriptions, SUBSCRIPTION),
    (t.subscription_secrets, SECRET),
    (t.deliveries, DELIVERY_ALL),
    (t.delivery_attempts, ATTEMPT),
):
    if tuple(_table.c.keys()) != _columns:  # pragma: no cover - a guard against drift
        raise RuntimeError(f"the column order of {_table.name} differs from delivery_tables.py")

CHANNEL = "waypost_deliveries"
"""PostgreSQL: the NOTIFY channel that wakes deliverers when deliveries became due."""

_UNFINISHED = "('pending', 'delivering')"


def _p(name: str, type_: Any = None) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=type_)


def _cols(prefix: str, names: tuple[str, ...]) -> str:
    return ", ".join(f"{prefix}.{name}" for name in names)


@functools.cache
def catalogue(dialect: str) -> DeliveryStatements:
    return DeliveryStatements(dialect)


class DeliveryStatements:
    """Every statement of the delivery store for one dialect (`postgresql` or `sqlite`)."""

    def __init__(self, dialect: str) -> None:  # noqa: PLR0915 - the catalogue
        if dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported dialect {dialect!r}")
        self.postgres = postgres = dialect == "postgresql"
        self._dialect: Dialect = PGDialect_asyncpg() if postgres else sqlite.dialect()  # type: ignore[no-untyped-call]
        self._pages: dict[tuple[Any, ...], Query] = {}
        q = self._compile
        s, sec, cp, d, a = (t.subscriptions, t.subscription_secrets, t.delivery_checkpoints,
                            t.deliveries, t.delivery_attempts)  # fmt: skip
        mine = (s.c.tenant_id == _p("tenant_id"), s.c.id == _p("id"))

        # --- Idempotency-Key records (the main store's table), kept with a write here -------
        ir = idempotency_records
        self.idempotency_drop_expired = q(
            sa.delete(ir).where(
                ir.c.tenant_id == _p("tenant_id"),
                ir.c.key == _p("key"),
                ir.c.created_at <= _p("before"),
            ),
            "tenant_id",
            "key",
            "before",
        )
        self.idempotency_insert = q(sa.insert(ir), *IDEMPOTENCY)

        # --- subscriptions -------------------------------------------------------------------
        self.insert_subscription = q(sa.insert(s), *SUBSCRIPTION)
        self.subscription = q(sa.select(s).where(*mine), "tenant_id", "id")
        self.tenant_subscriptions = q(
            sa.select(s).where(s.c.tenant_id == _p("tenant_id")).order_by(self.by_id(s.c.id)),
            "tenant_id",
        )
        self.subscriptions_by_ids = q(sa.select(s).where(self._among(s.c.id, "ids")), "ids")
        self.update_subscription = q(
            sa.update(s)
            .where(*mine, s.c.updated_at == _p("before"))
            .values(
                name=_p("name"),
                url=_p("url"),
                description=_p("description"),
                enabled=_p("enabled"),
                filter=_p("filter"),
                ordering=_p("ordering"),
                disabled_reason=_p("disabled_reason"),
                failing_since=_p("failing_since"),
                updated_at=_p("updated_at"),
            )
            .returning(s.c.id),
            "tenant_id", "id", "before", "name", "url", "description", "enabled", "filter",
            "ordering", "disabled_reason", "failing_since", "updated_at",
        )  # fmt: skip
        self.delete_subscription = q(sa.delete(s).where(*mine).returning(s.c.id), "tenant_id", "id")
        owned = (d.c.tenant_id == _p("tenant_id"), d.c.subscription_id == _p("id"))
        self.delete_attempts_of = q(
            sa.delete(a).where(a.c.delivery_id.in_(sa.select(d.c.id).where(*owned))),
            "tenant_id",
            "id",
        )
        self.delete_deliveries_of = q(sa.delete(d).where(*owned), "tenant_id", "id")
        self.delete_secrets_of = q(
            sa.delete(sec).where(
                sec.c.tenant_id == _p("tenant_id"), sec.c.subscription_id == _p("id")
            ),
            "tenant_id",
            "id",
        )
        self.unannounced = q(
            sa.select(s).where(s.c.announced < s.c.disables).order_by(self.by_id(s.c.id))
        )
        self.announce = q(
            sa.update(s)
            .where(*mine, s.c.announced < _p("announced"))
            .values(announced=_p("announced")),
            "tenant_id",
            "id",
            "announced",
        )
        self.secrets = q(
            sa.select(sec)
            .where(sec.c.tenant_id == _p("tenant_id"), sec.c.subscription_id == _p("id"))
            .order_by(sec.c.version),
            "tenant_id",
            "id",
        )
        self.insert_secret = q(sa.insert(sec), *SECRET)
        self.update_secret = q(
            sa.update(sec)
            .where(
                sec.c.tenant_id == _p("tenant_id"),
                sec.c.subscription_id == _p("id"),
                sec.c.version == _p("version"),
                sec.c.state == _p("before"),
            )
            .values(
                state=_p("state"),
                activated_at=_p("activated_at"),
                demoted_at=_p("demoted_at"),
                verify_until=_p("verify_until"),
                retired_at=_p("retired_at"),
            )
            .returning(sec.c.version),
            "tenant_id", "id", "version", "before", "state", "activated_at", "demoted_at",
            "verify_until", "retired_at",
        )  # fmt: skip

        # --- the dispatcher's checkpoints ------------------------------------------------
        here = cp.c.tenant_id == _p("tenant_id")
        self.checkpoints = q(sa.select(cp.c.tenant_id, cp.c.position))
        self.create_checkpoint = q(
            self._insert(cp)
            .values(tenant_id=_p("tenant_id"), position=_p("position"))
            .on_conflict_do_nothing(index_elements=[cp.c.tenant_id]),
            "tenant_id",
            "position",
        )
        self.lock_checkpoint = q(
            sa.select(cp.c.position).where(here).with_for_update(), "tenant_id"
        )
        self.lease_dispatch = q(
            sa.update(cp)
            .where(
                here,
                sa.or_(
                    cp.c.dispatcher.is_(None),
                    cp.c.dispatcher == _p("dispatcher"),
                    cp.c.lease_until < _p("now"),
                ),
            )
            .values(dispatcher=_p("dispatcher"), lease_until=_p("until"))
            .returning(cp.c.position),
            "tenant_id",
            "dispatcher",
            "now",
            "until",
        )
        self.advance_checkpoint = q(
            sa.update(cp)
            .where(here, cp.c.position == _p("expected"))
            .values(position=_p("to"))
            .returning(cp.c.position),
            "tenant_id",
            "expected",
            "to",
        )

        # --- deliveries ----------------------------------------------------------------------
        self.delivery = q(
            sa.select(*(d.c[name] for name in DELIVERY)).where(
                d.c.tenant_id == _p("tenant_id"),
                d.c.subscription_id == _p("subscription_id"),
                d.c.id == _p("id"),
            ),
            "tenant_id",
            "subscription_id",
            "id",
        )
        self.attempts = q(
            sa.select(a).where(a.c.delivery_id == _p("id")).order_by(a.c.number), "id"
        )
        self.attempts_of = q(
            sa.select(a)
            .where(a.c.tenant_id == _p("tenant_id"), self._among(a.c.delivery_id, "ids"))
            .order_by(a.c.delivery_id, a.c.number),
            "tenant_id",
            "ids",
        )
        self.requeue = q(sa.text(self._requeue()), *self._requeue_args)
        self.redrive = q(
            sa.update(d)
            .where(
                d.c.tenant_id == _p("tenant_id"),
                d.c.subscription_id == _p("subscription_id"),
                d.c.status == "dead",
                d.c.message_time >= _p("since"),
                d.c.message_time < _p("until"),
            )
            .values(status="pending", round_attempts=0, next_attempt_at=_p("now"))
            .returning(d.c.id),
            "tenant_id",
            "subscription_id",
            "since",
            "until",
            "now",
        )
        self.release = q(
            sa.update(d)
            .where(d.c.id == _p("id"), d.c.status == "delivering", d.c.claimed_by == _p("claim"))
            .values(
                status="pending",
                next_attempt_at=_p("now"),
                claimed_by=sa.null(),
                lease_until=sa.null(),
            )
            .returning(d.c.id),
            "id",
            "claim",
            "now",
        )
        self.expire = q(
            sa.update(d)
            .where(d.c.status == "delivering", d.c.lease_until < _p("now"))
            .values(
                status="pending",
                next_attempt_at=_p("now"),
                claimed_by=sa.null(),
                lease_until=sa.null(),
            )
            .returning(d.c.id),
            "now",
        )
        enabled = sa.exists().where(
            s.c.tenant_id == d.c.tenant_id, s.c.id == d.c.subscription_id, s.c.enabled.is_(True)
        )
        # in the due index's order: the first pending one of an enabled subscription
        self.next_due = q(
            sa.select(d.c.next_attempt_at)
            .where(d.c.status == "pending", d.c.attempted == _p("retries", sa.Boolean()), enabled)
            .order_by(d.c.next_attempt_at)
            .limit(1),
            "retries",
        )
        self.status_counts = q(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))
        self.disabled_count = q(
            sa.select(sa.func.count()).select_from(s).where(s.c.enabled.is_(False))
        )
        self.candidates = {
            retries: q(sa.text(self._candidates(retries)), *self._candidate_args)
            for retries in (False, True)
        }
        self.claim = q(sa.text(self._claim()), *self._claim_args)
        if postgres:
            self.pg_claim = {
                retries: q(sa.text(self._pg_claim(retries)), *self._pg_claim_args)
                for retries in (False, True)
            }
            self.insert_deliveries = q(sa.text(self._pg_insert()), *self._pg_insert_args)
            self.finish = q(sa.text(self._pg_finish()), *self._finish_args)
            self.finish_many = q(sa.text(self._pg_finish_many()), *self._finish_many_args)
            self.notify = q(sa.text(f"SELECT pg_notify('{CHANNEL}', '')"))
        else:
            self.insert_delivery = q(
                sqlite.insert(d)
                .values({name: _p(name) for name in DELIVERY_ALL})
                .on_conflict_do_nothing(index_elements=[d.c.subscription_id, d.c.message_id])
                .returning(d.c.id),
                *DELIVERY_ALL,
            )
            self.finish_delivery = q(sa.text(self._sqlite_finish()), *self._sqlite_finish_args)
            self.insert_attempt = q(sa.insert(a), *ATTEMPT)
            self.finish_subscription = q(
                sa.text(self._subscription_after()), *self._subscription_after_args
            )
        # What logs and traces call each statement (`adapters.sql.observe`).
        for name, value in vars(self).items():
            if isinstance(value, Query):
                value.name = name
        for retries, candidates in self.candidates.items():
            candidates.name = "candidates_retries" if retries else "candidates_first_attempts"
        if postgres:
            for retries, claim in self.pg_claim.items():
                claim.name = "claim_retries" if retries else "claim_first_attempts"

    # --- building blocks -------------------------------------------------------------------

    def _compile(self, stmt: sa.ClauseElement, *args: str) -> Query:
        return compile_query(stmt, self._dialect, args or None)

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    def _among(self, column: sa.ColumnElement[str], name: str) -> sa.ColumnElement[bool]:
        if self.postgres:
            return column == sa.any_(_p(name, postgresql.ARRAY(sa.Text())))
        return column.in_(
            sa.select(sa.func.json_each(_p(name, sa.Text())).table_valued("value").c.value)
        )

    def by_id(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """ORDER BY in code point order on both backends (Python's `sorted`)."""
        return column.collate("C") if self.postgres else column

    def _ids(self, name: str) -> str:
        """SQL for "one of the ids of the list parameter `name`"."""
        if self.postgres:
            return f"= ANY(CAST(:{name} AS text[]))"
        return f"IN (SELECT value FROM json_each(:{name}))"

    def _time(self, name: str) -> str:
        return f"CAST(:{name} AS timestamptz)" if self.postgres else f":{name}"

    _candidate_args = ("now", "excluded", "ordering_since", "scan", "room", "limit")

    def _due(self, retries: bool) -> str:
        """The due deliveries of enabled subscriptions (less those of the `excluded`
        subscriptions, and those ordering `artifact` holds back), soonest first, the first
        `scan` of them. PostgreSQL locks the rows it looks at, skipping those that others
        hold, so that deliverers claiming at once look at different rows. The scan is in
        the due index's order (status, attempted, next_attempt_at): it stops at `scan`
        rows rather than sorting every due one."""
        true = "true" if self.postgres else "1"
        attempted = true if retries else ("false" if self.postgres else "0")
        now, since = self._time("now"), self._time("ordering_since")
        lock = "\n    FOR UPDATE OF d SKIP LOCKED" if self.postgres else ""
        if self.postgres:
            # Not a join: PostgreSQL then scans the due index in order and stops at `scan`
            # rows (0.6 ms with 3,000 due), where with a join it read and sorted them all
            # (2.6 ms).
            join = ""
            enabled = (
                "(SELECT s.enabled FROM subscriptions AS s"
                " WHERE s.tenant_id = d.tenant_id AND s.id = d.subscription_id)"
            )
        else:
            join = (
                "\n    JOIN subscriptions AS s"
                " ON s.tenant_id = d.tenant_id AND s.id = d.subscription_id"
            )
            enabled = f"s.enabled = {true}"
        return f"""
    SELECT d.id, d.subscription_id, d.next_attempt_at, d.position
    FROM deliveries AS d{join}
    WHERE d.status = 'pending' AND d.attempted = {attempted} AND d.next_attempt_at <= {now}
      AND {enabled}
      AND NOT (d.subscription_id {self._ids("excluded")})
      AND (d.ordering_key IS NULL OR d.created_at < {since} OR NOT EXISTS (
        SELECT 1 FROM deliveries AS e
        WHERE e.subscription_id = d.subscription_id AND e.ordering_key = d.ordering_key
          AND e.position < d.position AND e.status IN {_UNFINISHED}))
    ORDER BY d.next_attempt_at
    LIMIT :scan{lock}"""

    _pg_claim_args = ("now", "excluded", "ordering_since", "scan", "room_ids", "rooms",
                      "room", "limit", "claim", "lease_until")  # fmt: skip

    def _pg_claim(self, retries: bool) -> str:
        """PostgreSQL's claim in one statement: the due rows (`_due`, locked), at most each
        subscription's room of them (`room_ids`/`rooms`, else `room`), soonest first, at
        most `limit`, leased to `claim`; with their subscriptions."""
        until = self._time("lease_until")
        return f"""
WITH scanned AS ({self._due(retries)}
), ranked AS (
  SELECT w.id, w.next_attempt_at, w.position,
         row_number() OVER (PARTITION BY w.subscription_id
                            ORDER BY w.next_attempt_at, w.position) AS rank,
         COALESCE(r.room, CAST(:room AS integer)) AS room
  FROM scanned AS w
  LEFT JOIN unnest(CAST(:room_ids AS text[]), CAST(:rooms AS integer[])) AS r(id, room)
    ON r.id = w.subscription_id
), picked AS (
  SELECT id FROM ranked WHERE rank <= room ORDER BY next_attempt_at, position LIMIT :limit
), claimed AS (
  UPDATE deliveries AS d SET status = 'delivering', claimed_by = CAST(:claim AS text),
                             lease_until = {until}
  FROM picked WHERE d.id = picked.id
  RETURNING {_cols("d", DELIVERY)}, d.body
)
SELECT {_cols("claimed", DELIVERY)}, claimed.body, {_cols("s", SUBSCRIPTION)}
FROM claimed
JOIN subscriptions AS s ON s.tenant_id = claimed.tenant_id AND s.id = claimed.subscription_id"""

    def _candidates(self, retries: bool) -> str:
        """`_due`, at most `room` of one subscription: the caller then picks (rooms of their
        own) and claims them (`_claim`) in the same transaction (SQLite)."""
        return f"""
SELECT c.id, c.subscription_id FROM (
  SELECT w.id, w.subscription_id, w.next_attempt_at, w.position,
         row_number() OVER (PARTITION BY w.subscription_id
                            ORDER BY w.next_attempt_at, w.position) AS rank
  FROM ({self._due(retries)}
  ) AS w
) AS c
WHERE c.rank <= :room
ORDER BY c.next_attempt_at, c.position
LIMIT :limit"""

    _claim_args = ("ids", "now", "claim", "lease_until")

    def _claim(self) -> str:
        """Lease the picked deliveries that are still due (and not taken meanwhile)."""
        now, until = self._time("now"), self._time("lease_until")
        if self.postgres:
            subscription = _cols("s", SUBSCRIPTION)
            return f"""
WITH picked AS (
  SELECT id FROM deliveries
  WHERE id {self._ids("ids")} AND status = 'pending' AND next_attempt_at <= {now}
  ORDER BY id
  FOR UPDATE SKIP LOCKED
), claimed AS (
  UPDATE deliveries AS d SET status = 'delivering', claimed_by = CAST(:claim AS text),
                             lease_until = {until}
  FROM picked WHERE d.id = picked.id
  RETURNING {_cols("d", DELIVERY)}, d.body
)
SELECT {_cols("claimed", DELIVERY)}, claimed.body, {subscription}
FROM claimed
JOIN subscriptions AS s ON s.tenant_id = claimed.tenant_id AND s.id = claimed.subscription_id"""
        # `+`: no index on these, so that SQLite finds the rows by their primary key
        return f"""
UPDATE deliveries SET status = 'delivering', claimed_by = :claim, lease_until = {until}
WHERE id {self._ids("ids")} AND +status = 'pending' AND +next_attempt_at <= {now}
RETURNING {", ".join(DELIVERY)}, body"""

    _pg_insert_args = tuple(f"r_{name}" for name in DELIVERY_ALL)

    def _pg_insert(self) -> str:
        """Many deliveries in one statement (`unnest`ed columns); an existing (subscription,
        message) is left as it is. Answers the ids added."""
        types = {
            "position": "bigint", "body": "bytea", "attempts": "integer",
            "round_attempts": "integer", "attempted": "boolean", "last_status_code": "integer",
            "next_attempt_at": "timestamptz", "last_attempt_at": "timestamptz",
            "message_time": "timestamptz", "created_at": "timestamptz",
            "lease_until": "timestamptz",
        }  # fmt: skip
        arrays = ",\n    ".join(
            f"CAST(:r_{name} AS {types.get(name, 'text')}[])" for name in DELIVERY_ALL
        )
        return f"""
INSERT INTO deliveries ({", ".join(DELIVERY_ALL)})
SELECT * FROM unnest(
    {arrays})
ON CONFLICT (subscription_id, message_id) DO NOTHING
RETURNING id"""

    _requeue_args = ("id", "tenant_id", "subscription_id", "message_id", "message_type",
                     "position", "ordering_key", "body", "message_time", "now", "correlation_id",
                     "causation_id")  # fmt: skip

    def _requeue(self) -> str:
        """Add a delivery, or send an existing finished one again (a new round, due now);
        only while its subscription exists."""
        now, at = self._time("now"), self._time("message_time")
        false = "false" if self.postgres else "0"
        if self.postgres:
            values = (
                "CAST(:id AS text), CAST(:tenant_id AS text), CAST(:subscription_id AS text), "
                "CAST(:message_id AS text), CAST(:message_type AS text), "
                "CAST(:position AS bigint), CAST(:ordering_key AS text), CAST(:body AS bytea)"
            )
            traced = "CAST(:correlation_id AS text), CAST(:causation_id AS text)"
        else:
            values = (
                ":id, :tenant_id, :subscription_id, :message_id, :message_type, :position, "
                ":ordering_key, :body"
            )
            traced = ":correlation_id, :causation_id"
        return f"""
INSERT INTO deliveries ({", ".join(DELIVERY_ALL)})
SELECT {values}, 'pending', 0, 0, {false}, {now}, NULL, NULL, NULL, {at}, {now}, NULL, NULL,
       {traced}
WHERE EXISTS (SELECT 1 FROM subscriptions
              WHERE tenant_id = :tenant_id AND id = :subscription_id)
ON CONFLICT (subscription_id, message_id) DO UPDATE
SET status = 'pending', round_attempts = 0, next_attempt_at = excluded.next_attempt_at,
    body = excluded.body
WHERE deliveries.status IN ('succeeded', 'dead')
RETURNING id"""

    _finish_args = ("id", "claim", "status", "next_attempt_at", "started_at", "duration_ms",
                    "status_code", "error", "excerpt", "clear_body", "failing",
                    "disable")  # fmt: skip

    def _subscription_set(self) -> str:
        """The SET of a finish's subscription update: the failing streak starts or ends (a
        `failing` of NULL leaves it); a disable (if it is still enabled) turns it off, says
        why, and counts."""
        started = self._time("started_at")
        disabling = (
            "CAST(:disable AS text) IS NOT NULL" if self.postgres else ":disable IS NOT NULL"
        )
        false = "false" if self.postgres else "0"
        return f"""failing_since = CASE WHEN :failing IS NULL THEN failing_since
                         WHEN :failing THEN COALESCE(failing_since, {started})
                         ELSE NULL END,
    disabled_reason = CASE WHEN {disabling} AND enabled THEN :disable
                           ELSE disabled_reason END,
    disables = disables + CASE WHEN {disabling} AND enabled THEN 1 ELSE 0 END,
    updated_at = CASE WHEN {disabling} AND enabled THEN {started} ELSE updated_at END,
    enabled = CASE WHEN {disabling} THEN {false} ELSE enabled END"""

    def _subscription_when(self) -> str:
        disabling = (
            "CAST(:disable AS text) IS NOT NULL" if self.postgres else ":disable IS NOT NULL"
        )
        return (
            f"((:failing IS NOT NULL AND (failing_since IS NULL) = :failing)"
            f" OR ({disabling} AND enabled))"
        )

    def _pg_finish(self) -> str:
        """The fenced finish in one statement: the delivery (only while `claim` holds it),
        its attempt record, and the subscription when its state changes. Answers 1 when
        the claim held, 0 when not (nothing was written then)."""
        next_at, started = self._time("next_attempt_at"), self._time("started_at")
        return f"""
WITH done AS (
  UPDATE deliveries SET
    status = CAST(:status AS text), attempts = attempts + 1,
    round_attempts = round_attempts + 1, attempted = true, next_attempt_at = {next_at},
    last_attempt_at = {started}, last_status_code = CAST(:status_code AS integer),
    last_error = CAST(:error AS text), claimed_by = NULL, lease_until = NULL,
    body = CASE WHEN CAST(:clear_body AS boolean) THEN CAST('' AS bytea) ELSE body END
  WHERE id = CAST(:id AS text) AND status = 'delivering' AND claimed_by = CAST(:claim AS text)
  RETURNING id, tenant_id, subscription_id, attempts
), recorded AS (
  INSERT INTO delivery_attempts ({", ".join(ATTEMPT)})
  SELECT id, attempts, tenant_id, {started}, CAST(:duration_ms AS double precision),
         CAST(:status_code AS integer), CAST(:error AS text), CAST(:excerpt AS text)
  FROM done
), changed AS (
  UPDATE subscriptions SET
    {self._subscription_set()}
  FROM done
  WHERE subscriptions.tenant_id = done.tenant_id AND subscriptions.id = done.subscription_id
    AND {self._subscription_when()}
)
SELECT count(*) FROM done""".replace(":failing", "CAST(:failing AS boolean)")

    _finish_many_args = ("ids", "claims", "statuses", "next_attempt_ats", "started_ats",
                         "durations", "status_codes", "errors", "excerpts",
                         "clear_bodies")  # fmt: skip

    def _pg_finish_many(self) -> str:
        """Fenced finishes of several deliveries in one statement (columns as arrays), for
        outcomes that leave their subscriptions as they are: each delivery only while its
        claim holds it, with its attempt record. Answers the ids written."""
        return f"""
WITH given AS (
  SELECT * FROM unnest(
    CAST(:ids AS text[]), CAST(:claims AS text[]), CAST(:statuses AS text[]),
    CAST(:next_attempt_ats AS timestamptz[]), CAST(:started_ats AS timestamptz[]),
    CAST(:durations AS double precision[]), CAST(:status_codes AS integer[]),
    CAST(:errors AS text[]), CAST(:excerpts AS text[]), CAST(:clear_bodies AS boolean[])
  ) AS g(id, claim, status, next_attempt_at, started_at, duration_ms, status_code, error,
         excerpt, clear_body)
), done AS (
  UPDATE deliveries AS d SET
    status = g.status, attempts = d.attempts + 1, round_attempts = d.round_attempts + 1,
    attempted = true, next_attempt_at = g.next_attempt_at, last_attempt_at = g.started_at,
    last_status_code = g.status_code, last_error = g.error, claimed_by = NULL,
    lease_until = NULL, body = CASE WHEN g.clear_body THEN CAST('' AS bytea) ELSE d.body END
  FROM given AS g
  WHERE d.id = g.id AND d.status = 'delivering' AND d.claimed_by = g.claim
  RETURNING d.id, d.attempts, d.tenant_id, g.started_at, g.duration_ms, g.status_code,
            g.error, g.excerpt
), recorded AS (
  INSERT INTO delivery_attempts ({", ".join(ATTEMPT)})
  SELECT * FROM done
)
SELECT id FROM done"""

    _sqlite_finish_args = ("id", "claim", "status", "next_attempt_at", "started_at",
                           "status_code", "error", "clear_body")  # fmt: skip

    def _sqlite_finish(self) -> str:
        return """
UPDATE deliveries SET
  status = :status, attempts = attempts + 1, round_attempts = round_attempts + 1,
  attempted = 1, next_attempt_at = :next_attempt_at, last_attempt_at = :started_at,
  last_status_code = :status_code, last_error = :error, claimed_by = NULL, lease_until = NULL,
  body = CASE WHEN :clear_body THEN X'' ELSE body END
WHERE id = :id AND status = 'delivering' AND claimed_by = :claim
RETURNING tenant_id, subscription_id, attempts"""

    _subscription_after_args = ("tenant_id", "id", "started_at", "failing", "disable")

    def _subscription_after(self) -> str:
        return f"""
UPDATE subscriptions SET
  {self._subscription_set()}
WHERE tenant_id = :tenant_id AND id = :id AND {self._subscription_when()}"""

    # --- list queries: one compiled Query per shape --------------------------------------

    def deliveries_page(self, *, status: bool, order: str, after: bool) -> Query:
        """A subscription's deliveries, newest (or oldest) first, optionally of one status,
        after a cursor: arguments tenant_id, subscription_id, [status], [after], limit."""
        shape = ("deliveries", status, order, after)
        found = self._pages.get(shape)
        if found is None:
            d = t.deliveries
            stmt = sa.select(*(d.c[name] for name in DELIVERY)).where(
                d.c.tenant_id == _p("tenant_id"), d.c.subscription_id == _p("subscription_id")
            )
            args = ["tenant_id", "subscription_id"]
            if status:
                stmt = stmt.where(d.c.status == _p("status"))
                args.append("status")
            found = self._pages[shape] = self._keyset(stmt, d.c.id, order, after, args)
            found.name = "deliveries_page"
        return found

    def subscriptions_page(self, *, order: str, after: bool) -> Query:
        """A tenant's subscriptions: arguments tenant_id, [after], limit."""
        shape = ("subscriptions", order, after)
        found = self._pages.get(shape)
        if found is None:
            s = t.subscriptions
            stmt = sa.select(s).where(s.c.tenant_id == _p("tenant_id"))
            found = self._pages[shape] = self._keyset(stmt, s.c.id, order, after, ["tenant_id"])
            found.name = "subscriptions_page"
        return found

    def _keyset(
        self,
        stmt: sa.Select[Any],
        id_column: sa.ColumnElement[str],
        order: str,
        after: bool,
        args: list[str],
    ) -> Query:
        if after:
            cursor = _p("after")
            stmt = stmt.where(id_column < cursor if order == "desc" else id_column > cursor)
            args.append("after")
        key = self.by_id(id_column)
        stmt = stmt.order_by(key.desc() if order == "desc" else key.asc()).limit(_p("limit"))
        args.append("limit")
        return self._compile(stmt, *args)
