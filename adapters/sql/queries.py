"""The SQL the store speaks, in one catalogue: Core constructs, compiled once per dialect.

Fixed statements are built here from `adapters.sql.tables` with named bind
parameters and compiled once per store into the driver's own text and parameter
order (`Query`): `$n` for asyncpg, `?` for sqlite3. The hot path hands the driver
that text and a tuple, with no SQLAlchemy in between; asyncpg keeps each text
prepared on its connection, sqlite3 in its statement cache.

Sets of ids and keys are ONE parameter, so one text serves any number of them
(asyncpg prepares it once): a `text[]` array per column on PostgreSQL (`= ANY`,
`unnest`), a JSON array read by `json_each` on SQLite.

List queries (`*_page`) take optional filters: built per call from Core, with bind
parameters for every value, so a list has few shapes; each shape is built and
compiled once (`Page`). SQLite runs the compiled text; PostgreSQL runs the Core
statement through the store's SQLAlchemy engine (its compiled cache, its events).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert

from adapters.sql import tables as t
from core.ports import (
    CompletionFilter,
    EventFilter,
    GroupFilter,
    PageRequest,
    ReceiverFilter,
)

NVRPP = ("name", "version", "release", "platform_id", "package")

# The column order of every row the store reads or writes as a tuple (tables.py's order).
LOG = ("tenant_id", "position", "id", "stream", "stream_version", "type", "schema_version",
       "correlation_id", "causation_id", "actor", "occurred_at", "data")  # fmt: skip
TENANTS = ("id", "slug", "name", "disabled", "created_at", "updated_at")
RECEIVERS = ("tenant_id", "id", "name", "type", "version", "description", "schema",
             "fingerprint", "created_at")  # fmt: skip
EVENTS = ("tenant_id", "id", *NVRPP, "description", "payload", "success",
          "event_receiver_id", "created_at")  # fmt: skip
GROUPS = ("tenant_id", "id", "name", "type", "version", "description", "enabled",
          "event_receiver_ids", "created_at", "updated_at")  # fmt: skip
MEMBERS = ("tenant_id", "receiver_id", "group_id")
LATEST = ("tenant_id", "receiver_id", *NVRPP, "event_id")
COMPLETIONS = ("tenant_id", "id", "group_id", *NVRPP, "triggering_event_id",
               "member_event_ids", "completed_at")  # fmt: skip
IDEMPOTENCY = ("tenant_id", "key", "fingerprint", "status", "content_type", "location", "body",
               "created_at")  # fmt: skip

for _table, _columns in (
    (t.log, LOG),
    (t.tenants, TENANTS),
    (t.receivers, RECEIVERS),
    (t.events, EVENTS),
    (t.groups, GROUPS),
    (t.group_members, MEMBERS),
    (t.latest, LATEST),
    (t.completions, COMPLETIONS),
    (t.idempotency_records, IDEMPOTENCY),
):
    if tuple(_table.c.keys()) != _columns:  # pragma: no cover - a guard against drift
        raise RuntimeError(f"queries.py's column order of {_table.name} differs from tables.py")


class Query:
    """A statement compiled for one driver: its text and where each argument goes.

    `args` names the arguments callers pass, in that order; `bind` turns them into
    the driver's positional parameters (a name may be used twice, or not at all, and
    constants SQLAlchemy made parameters of, such as SQLite's OFFSET 0, are filled in).
    """

    __slots__ = ("_order", "args", "name", "sql")

    def __init__(
        self, sql: str, args: tuple[str, ...], order: tuple[int | _Constant, ...] | None
    ) -> None:
        self.sql = sql
        self.args = args
        self._order = order
        #: The statement's name in the catalogue (`Statements`' attribute): what logs and
        #: traces call it, never its text.
        self.name = "statement"

    def bind(self, values: Sequence[Any]) -> Sequence[Any]:
        order = self._order
        if order is None:
            return values
        return [values[i] if type(i) is int else i.value for i in order]  # type: ignore[union-attr]

    def bind_many(self, rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
        return rows if self._order is None else [self.bind(row) for row in rows]

    def bind_named(self, values: Mapping[str, Any]) -> Sequence[Any]:
        return self.bind([values[name] for name in self.args])

    def __repr__(self) -> str:
        return f"Query({self.sql!r}, args={self.args!r})"


class _Constant:
    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


def compile_query(
    stmt: sa.ClauseElement, dialect: Dialect, args: Sequence[str] | None = None
) -> Query:
    """Compile `stmt`; its bind parameters must all be named in `args` (None: its own
    parameter names, in the order of their first use) or have a value of their own."""
    compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
    names = tuple(compiled.positiontup or ())
    constants = {
        name: param.value
        for name, param in compiled.binds.items()
        if not param.required and param.value is not None and param.key not in (args or ())
    }
    if args is None:
        args = tuple(name for name in dict.fromkeys(names) if name not in constants)
    unknown = sorted(set(names) - set(args) - set(constants))
    if unknown:
        raise ValueError(f"bind parameters {unknown} are not among the arguments {args}")
    order = tuple(args.index(n) if n in args else _Constant(constants[n]) for n in names)
    identity = order == tuple(range(len(args)))
    return Query(compiled.string, tuple(args), None if identity else order)


WRITE_BEGIN = (
    "BEGIN ISOLATION LEVEL READ COMMITTED; "
    # Generic plans, no sequential scans: a write transaction's statements are all index
    # probes and InitPlans (see `Statements._ids_in`), planned once per connection rather
    # than at every call, and never turned into scans by statistics that lag behind the
    # tables (a young database, a `latest` table full of updated rows).
    "SET LOCAL plan_cache_mode = force_generic_plan; "
    "SET LOCAL enable_seqscan = off"
)
"""PostgreSQL: how a write transaction begins (the writer lock follows)."""
_TENANT_LITERAL = "__tenant_id_literal__"
_SAFE_LITERAL = re.compile(r"[0-9A-Za-z_.:-]{1,200}")
"""Tenant ids that may be written into SQL as a literal: no quote, no backslash, no space."""


def _p(name: str, type_: Any = None) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=type_)


_TEXTS = postgresql.ARRAY(sa.Text())


class Page:
    """One shape of a list query: the Core statement and, for SQLite, its compiled text."""

    __slots__ = ("name", "query", "stmt")

    def __init__(self, stmt: sa.Select[Any], query: Query | None, name: str = "page") -> None:
        self.stmt = stmt
        self.query = query
        self.name = name


@functools.cache
def catalogue(dialect: str) -> Statements:
    """The statements of a dialect, compiled once per process (stores share them)."""
    return Statements(dialect)


class Statements:
    """Every statement of the store for one dialect (`postgresql` or `sqlite`)."""

    def __init__(self, dialect: str) -> None:  # noqa: PLR0915 - one statement per line
        if dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported dialect {dialect!r}")
        self.dialect = dialect
        self.postgres = postgres = dialect == "postgresql"
        self._dialect: Dialect = PGDialect_asyncpg() if postgres else sqlite.dialect()  # type: ignore[no-untyped-call]
        self._pages: dict[tuple[Any, ...], Page] = {}
        q = self._compile
        heads, log, cp = t.log_heads, t.log, t.checkpoints

        # --- the writer lock, the head, the checkpoint -------------------------------------
        self.head = q(
            sa.select(heads.c.position).where(heads.c.tenant_id == _p("tenant_id")), "tenant_id"
        )
        self.lock_head = q(
            sa.select(heads.c.position)
            .where(heads.c.tenant_id == _p("tenant_id"))
            .with_for_update(),  # SQLite renders no FOR UPDATE: BEGIN IMMEDIATE is its lock
            "tenant_id",
        )
        self.create_head = q(
            self._insert(heads)
            .values(tenant_id=_p("tenant_id"), position=sa.literal_column("0"))
            .on_conflict_do_nothing(index_elements=[heads.c.tenant_id]),
            "tenant_id",
        )
        self.set_head = q(
            sa.update(heads)
            .where(heads.c.tenant_id == _p("tenant_id"))
            .values(position=_p("position")),
            "position",
            "tenant_id",
        )
        self.tenant_ids = q(sa.select(heads.c.tenant_id))
        self.heads = q(sa.select(heads.c.tenant_id, heads.c.position))
        self._prologue = self._write_prologue() if postgres else None
        self.checkpoint = q(
            sa.select(cp.c.position).where(cp.c.tenant_id == _p("tenant_id")), "tenant_id"
        )
        self.set_checkpoint = q(self._upsert(cp, ["tenant_id"]), "tenant_id", "position")

        # --- the log ---------------------------------------------------------------------------
        self.insert_log = q(sa.insert(log), *LOG)
        self.read_log = q(
            sa.select(log)
            .where(log.c.tenant_id == _p("tenant_id"), log.c.position > _p("after"))
            .order_by(log.c.position)
            .limit(_p("limit")),
            "tenant_id",
            "after",
            "limit",
        )
        # Replay: what the projection needs of each entry, nothing more.
        self.read_log_events = q(
            sa.select(log.c.position, log.c.type, log.c.schema_version, log.c.data)
            .where(log.c.tenant_id == _p("tenant_id"), log.c.position > _p("after"))
            .order_by(log.c.position)
            .limit(_p("limit")),
            "tenant_id",
            "after",
            "limit",
        )
        self.read_stream = q(
            sa.select(log)
            .where(log.c.tenant_id == _p("tenant_id"), log.c.stream == _p("stream"))
            .order_by(log.c.position),
            "tenant_id",
            "stream",
        )
        self.stream_version = q(
            sa.select(sa.func.max(log.c.stream_version)).where(
                log.c.tenant_id == _p("tenant_id"), log.c.stream == _p("stream")
            ),
            "tenant_id",
            "stream",
        )
        self.stream_versions = q(
            sa.select(log.c.stream, sa.func.max(log.c.stream_version))
            .where(log.c.tenant_id == _p("tenant_id"), self._among(log.c.stream, "streams"))
            .group_by(log.c.stream),
            "tenant_id",
            "streams",
        )

        # --- read-model writes -------------------------------------------------------------
        self.upsert_tenant = q(self._upsert(t.tenants, ["id"]), *TENANTS)
        self.insert_receiver = q(sa.insert(t.receivers), *RECEIVERS)
        self.insert_event = q(sa.insert(t.events), *EVENTS)
        self.upsert_latest = q(
            self._upsert(t.latest, ["tenant_id", "receiver_id", *NVRPP]), *LATEST
        )
        self.upsert_group = q(self._upsert(t.groups, ["tenant_id", "id"]), *GROUPS)
        self.delete_groups = q(
            sa.delete(t.groups).where(
                t.groups.c.tenant_id == _p("tenant_id"), self._among(t.groups.c.id, "group_ids")
            ),
            "tenant_id",
            "group_ids",
        )
        self.delete_members = q(
            sa.delete(t.group_members).where(
                t.group_members.c.tenant_id == _p("tenant_id"),
                self._among(t.group_members.c.group_id, "group_ids"),
            ),
            "tenant_id",
            "group_ids",
        )
        self.insert_member = q(sa.insert(t.group_members), *MEMBERS)
        self.insert_completion = q(sa.insert(t.completions), *COMPLETIONS)
        self.delete_read_models = [q(sa.delete(table)) for table in t.READ_MODELS]
        self.delete_tenant_read_models = [
            q(
                sa.delete(table).where(
                    (table.c.id if table is t.tenants else table.c.tenant_id) == _p("tenant_id")
                ),
                "tenant_id",
            )
            for table in t.READ_MODELS
        ]
        # A read replica's lag (PostgreSQL standbys): none when it replayed all it received.
        self.replica_lag = q(
            sa.text(
                "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
                "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
            )
        )
        # Replay after a position: the rows of insert-only read models those entries made.
        self.delete_made = {
            name: q(
                sa.delete(table).where(
                    table.c.tenant_id == _p("tenant_id"), self._among(table.c.id, "ids")
                ),
                "tenant_id",
                "ids",
            )
            for name, table in (
                ("events", t.events),
                ("receivers", t.receivers),
                ("completions", t.completions),
            )
        }
        for name, delete in self.delete_made.items():
            delete.name = f"delete_made_{name}"
        rp = t.replay_progress
        self.replay_mark = q(
            self._insert(rp)
            .values(run=_p("run"), tenant_id=_p("tenant_id"))
            .on_conflict_do_nothing(index_elements=[rp.c.run, rp.c.tenant_id]),
            "run",
            "tenant_id",
        )
        self.replay_done = q(sa.select(rp.c.tenant_id).where(rp.c.run == _p("run")), "run")
        self.replay_forget = q(sa.delete(rp).where(rp.c.run == _p("run")), "run")
        self._writes: dict[tuple[int, ...], Query] = {}

        # --- reads by key ------------------------------------------------------------------
        tn, rc, ev, gr = t.tenants, t.receivers, t.events, t.groups
        self.tenant_by_id = q(sa.select(tn).where(tn.c.id == _p("id")), "id")
        self.tenant_by_slug = q(sa.select(tn).where(tn.c.slug == _p("slug")), "slug")
        self.receiver_by_id = q(
            sa.select(rc).where(rc.c.tenant_id == _p("tenant_id"), rc.c.id == _p("id")),
            "tenant_id",
            "id",
        )
        self.receiver_by_triple = q(
            sa.select(rc).where(
                rc.c.tenant_id == _p("tenant_id"),
                rc.c.name == _p("name"),
                rc.c.type == _p("type"),
                rc.c.version == _p("version"),
            ),
            "tenant_id",
            "name",
            "type",
            "version",
        )
        self.receivers_by_ids = q(
            sa.select(rc).where(rc.c.tenant_id == _p("tenant_id"), self._among(rc.c.id, "ids")),
            "tenant_id",
            "ids",
        )
        self.event_by_id = q(
            sa.select(ev).where(ev.c.tenant_id == _p("tenant_id"), ev.c.id == _p("id")),
            "tenant_id",
            "id",
        )
        self.group_by_id = q(
            sa.select(gr).where(gr.c.tenant_id == _p("tenant_id"), gr.c.id == _p("id")),
            "tenant_id",
            "id",
        )
        self.groups_containing = q(self._groups_containing(), "tenant_id", "receiver_ids")
        self.groups_containing_and_head = (
            q(self._groups_containing_and_head(), "tenant_id", "receiver_ids") if postgres else None
        )
        self.latest_events = q(self._latest_events(), "tenant_id", "receiver_ids", *self._keys)
        self.latest_event = q(self._latest_event(), "tenant_id", "receiver_id", *NVRPP)

        (
            self.idempotency_get,
            self.idempotency_insert,
            self.idempotency_delete,
            self.idempotency_purge,
        ) = self._idempotency()

        # --- the digest: every read model in a fixed order ---------------------------------
        (
            self.digest_tenants,
            self.digest_receivers,
            self.digest_events,
            self.digest_groups,
            self.digest_latest,
            self.digest_completions,
            self.digest_checkpoints,
        ) = self._digest()
        for name, value in vars(self).items():
            if isinstance(value, Query):
                value.name = name
        for table, delete, of_tenant in zip(
            t.READ_MODELS, self.delete_read_models, self.delete_tenant_read_models, strict=True
        ):
            delete.name = f"delete_{table.name}"
            of_tenant.name = f"delete_tenant_{table.name}"

    def _idempotency(self) -> tuple[Query, Query, Query, Query]:
        """Idempotency-Key records: by key, insert, delete, and delete a batch of expired ones."""
        q = self._compile
        ir = t.idempotency_records
        at_key = (ir.c.tenant_id == _p("tenant_id"), ir.c.key == _p("key"))
        expired = (
            sa.select(ir.c.tenant_id, ir.c.key)
            .where(ir.c.created_at <= _p("before"))
            .limit(_p("limit"))
        )
        return (
            q(sa.select(ir).where(*at_key), "tenant_id", "key"),
            q(sa.insert(ir), *IDEMPOTENCY),
            q(sa.delete(ir).where(*at_key), "tenant_id", "key"),
            q(
                sa.delete(ir)
                .where(sa.tuple_(ir.c.tenant_id, ir.c.key).in_(expired))
                .returning(ir.c.key),
                "before",
                "limit",
            ),
        )

    def _digest(self) -> list[Query]:
        by_id = self.by_id
        tn, rc, ev, gr, lt, cm, cp = (
            t.tenants, t.receivers, t.events, t.groups, t.latest, t.completions, t.checkpoints
        )  # fmt: skip
        return [
            self._compile(stmt)
            for stmt in (
                sa.select(tn).order_by(by_id(tn.c.id)),
                sa.select(rc).order_by(by_id(rc.c.id)),
                sa.select(ev).order_by(by_id(ev.c.id)),
                sa.select(gr).order_by(by_id(gr.c.id)),
                sa.select(lt).order_by(by_id(lt.c.tenant_id), by_id(lt.c.receiver_id)),
                sa.select(cm).order_by(by_id(cm.c.id)),
                sa.select(cp.c.tenant_id, cp.c.position).order_by(by_id(cp.c.tenant_id)),
            )
        ]

    def write_prologue(self, tenant_id: str) -> str | None:
        """PostgreSQL: BEGIN, make the tenant's head row if missing, lock it: one simple
        query, one round trip. None when the tenant id is not plain enough to be written
        into SQL as a literal: the caller then sends `WRITE_BEGIN`, `create_head` and
        `lock_head`, with parameters."""
        if self._prologue is None or _SAFE_LITERAL.fullmatch(tenant_id) is None:
            return None
        return self._prologue.replace(_TENANT_LITERAL, f"'{tenant_id}'")

    # --- building blocks -------------------------------------------------------------------

    def _write_prologue(self) -> str:
        heads = t.log_heads
        tenant: sa.ColumnClause[str] = sa.literal_column(_TENANT_LITERAL)
        create = (
            self._insert(heads)
            .inline()  # no RETURNING of the key SQLAlchemy would not know otherwise
            .values(tenant_id=tenant, position=sa.literal_column("0"))
            .on_conflict_do_nothing(index_elements=[heads.c.tenant_id])
        )
        lock: sa.Select[Any] = (
            sa.select(sa.literal_column("1"))
            .select_from(heads)
            .where(heads.c.tenant_id == tenant)
            .with_for_update()
        )
        return "; ".join((WRITE_BEGIN, self._compile(create).sql, self._compile(lock).sql))

    def _compile(self, stmt: sa.ClauseElement, *args: str) -> Query:
        return compile_query(stmt, self._dialect, args)

    @property
    def _keys(self) -> tuple[str, ...]:
        """The arguments of a set of NVRPP keys: one array per part, or one JSON array."""
        return tuple(f"key_{name}" for name in NVRPP) if self.postgres else ("keys",)

    def _among(self, column: sa.ColumnElement[str], name: str) -> sa.ColumnElement[bool]:
        """`column` is one of the strings of the argument `name` (a list)."""
        if self.postgres:
            return column == sa.any_(_p(name, _TEXTS))
        return column.in_(sa.select(_json_each(name).c.value))

    def _ids_in(self, column: sa.Column[str], ids: sa.Select[Any]) -> sa.ColumnElement[bool]:
        """`column` is one of the ids the subquery selects.

        Written as a join, the planner may drive it from the wrong side when its
        statistics are stale (a young table, a cached generic plan: 80 ms instead of
        0.1 ms at 30k events); on PostgreSQL `= ANY (SELECT array_agg(...))` is an
        InitPlan evaluated first, which leaves it no such choice.
        """
        if not self.postgres:
            return column.in_(ids)
        (selected,) = ids.selected_columns
        ids_array = ids.with_only_columns(sa.func.array_agg(selected)).scalar_subquery()
        # The CAST keeps the subquery a value (one array): "= ANY (SELECT ...)" would compare
        # with each row instead.
        return column == sa.any_(sa.cast(ids_array, _TEXTS))

    def _member_groups(self) -> sa.Select[Any]:
        gm = t.group_members
        return sa.select(gm.c.group_id).where(
            gm.c.tenant_id == _p("tenant_id"), self._among(gm.c.receiver_id, "receiver_ids")
        )

    def _groups_containing(self) -> sa.Select[Any]:
        gr = t.groups
        return sa.select(gr).where(
            gr.c.tenant_id == _p("tenant_id"), self._ids_in(gr.c.id, self._member_groups())
        )

    def _groups_containing_and_head(self) -> sa.Select[Any]:
        """PostgreSQL's write path: the head and the groups in one round trip.

        One row per group, each with the head; one row of NULL group columns when no
        group matches. Sent after the writer lock was taken, in its own statement, so
        its snapshot sees every write committed before the lock.
        """
        heads, gr = t.log_heads, t.groups
        on = sa.and_(
            gr.c.tenant_id == heads.c.tenant_id, self._ids_in(gr.c.id, self._member_groups())
        )
        return (
            sa.select(heads.c.position, gr)
            .select_from(heads.outerjoin(gr, on))
            .where(heads.c.tenant_id == _p("tenant_id"))
        )

    def _latest_events(self) -> sa.Select[Any]:
        """The latest event of each (receiver, key) pair: one primary-key probe per pair.

        The pairs are the product of the receivers and the keys (PostgreSQL: `unnest`ed
        arrays; SQLite: `json_each` of JSON arrays). Each probe is a correlated scalar
        subquery on `latest`'s whole primary key, which no planner can turn into a scan
        of a tenant's `latest` rows, whatever its statistics say; the events are then
        fetched by primary key (see `_ids_in`).
        """
        lt, ev = t.latest, t.events
        parts: list[sa.ColumnElement[Any]]
        if self.postgres:
            receivers = (
                sa.func.unnest(_p("receiver_ids", _TEXTS))
                .table_valued("value")
                .render_derived(name="r")
            )
            keys = (
                sa.func.unnest(*(_p(f"key_{name}", _TEXTS) for name in NVRPP))
                .table_valued(*NVRPP)
                .render_derived(name="k")
            )
            parts = [keys.c[name] for name in NVRPP]
        else:
            receivers, keys = _json_each("receiver_ids").alias("r"), _json_each("keys").alias("k")
            parts = [
                sa.func.json_extract(keys.c.value, sa.literal_column(f"'$[{i}]'"))
                for i in range(len(NVRPP))
            ]
        probe = (
            sa.select(lt.c.event_id)
            .where(
                lt.c.tenant_id == _p("tenant_id"),
                lt.c.receiver_id == receivers.c.value,
                *(lt.c[name] == part for name, part in zip(NVRPP, parts, strict=True)),
            )
            .scalar_subquery()
        )
        event_ids = sa.select(probe).select_from(receivers).join(keys, sa.true())
        return sa.select(ev).where(
            ev.c.tenant_id == _p("tenant_id"), self._ids_in(ev.c.id, event_ids)
        )

    def _latest_event(self) -> sa.Select[Any]:
        """The latest event of one receiver for one key (the common case: one event, its
        receiver in no group): one primary-key probe, values as plain parameters."""
        lt, ev = t.latest, t.events
        event_id = (
            sa.select(lt.c.event_id)
            .where(
                lt.c.tenant_id == _p("tenant_id"),
                lt.c.receiver_id == _p("receiver_id"),
                *(lt.c[name] == _p(name) for name in NVRPP),
            )
            .scalar_subquery()
        )
        return sa.select(ev).where(ev.c.tenant_id == _p("tenant_id"), ev.c.id == event_id)

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    def _upsert(self, table: sa.Table, keys: list[str]) -> Insert:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET every other column to the new row's."""
        stmt = self._insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={c.name: stmt.excluded[c.name] for c in table.c if c.name not in keys},
        )

    def by_id(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """`column` for ORDER BY in code point order (Python's `sorted`), on both backends."""
        return column.collate("C") if self.postgres else column

    def write(self, shape: tuple[int, ...]) -> Query:
        """PostgreSQL: the one-statement append of this shape (see `pg_write`)."""
        found = self._writes.get(shape)
        if found is None:
            text, args = pg_write(shape)
            found = self._writes[shape] = self._compile(sa.text(text), *args)
            found.name = "append"
        return found

    # --- list queries: one Page per shape ----------------------------------------------------

    def page(self, shape: tuple[Any, ...], build: Callable[[], sa.Select[Any]]) -> Page:
        """The Page of a list query's shape, built and compiled the first time it is asked."""
        found = self._pages.get(shape)
        if found is None:
            stmt = build()
            query = None if self.postgres else compile_query(stmt, self._dialect)
            found = self._pages[shape] = Page(stmt, query, f"{shape[0]}_page")
        return found


def _json_each(name: str) -> sa.TableValuedAlias:
    """SQLite's `json_each(:name)`: the elements of a JSON array, as the column `value`."""
    return sa.func.json_each(_p(name, sa.Text())).table_valued("value")


# --- list queries: filters and keyset pages ----------------------------------------------------

Shape = tuple[tuple[str, ...], str, bool]
"""Which filters are set, the order, whether there is a cursor: what a list query's SQL
depends on (values are bind parameters)."""


def _shape(
    page: PageRequest, values: dict[str, Any], wanted: Mapping[str, object]
) -> tuple[Shape, dict[str, Any]]:
    """The shape of a list query and the values of its bind parameters: `values`, each
    filter that is set (as `w_<name>`), the limit and the cursor."""
    set_filters = tuple(name for name, value in wanted.items() if value is not None)
    for name in set_filters:
        values[f"w_{name}"] = wanted[name]
    values["limit"] = page.limit
    if page.after is not None:
        values["after"] = page.after
    return (set_filters, page.order, page.after is not None), values


_Range = tuple[str, Callable[[sa.ColumnElement[Any], sa.BindParameter[Any]], Any]]


def _paged(
    table: sa.Table,
    where: list[sa.ColumnElement[bool]],
    shape: Shape,
    ranges: Mapping[str, _Range] | None = None,
) -> sa.Select[Any]:
    """SELECT the table's rows: `where`, then an exact match (or a range) per set filter,
    then keyset pagination on id: after the cursor, in the asked order, at most `limit`."""
    filters, order, after = shape
    stmt = sa.select(table).where(*where)
    for name in filters:
        column_name, compare = (ranges or {}).get(name, (name, sa.ColumnElement.__eq__))
        column = table.c[column_name]
        stmt = stmt.where(compare(column, _p(f"w_{name}", column.type)))
    id_column = table.c.id
    if order == "desc":
        if after:
            stmt = stmt.where(id_column < _p("after"))
        return stmt.order_by(id_column.desc()).limit(_p("limit"))
    if after:
        stmt = stmt.where(id_column > _p("after"))
    return stmt.order_by(id_column.asc()).limit(_p("limit"))


def tenants_page(sql: Statements, page: PageRequest) -> tuple[Page, dict[str, Any]]:
    shape, values = _shape(page, {}, {})
    return sql.page(("tenants", shape), lambda: _paged(t.tenants, [], shape)), values


def receivers_page(
    sql: Statements, tenant_id: str, where: ReceiverFilter, page: PageRequest
) -> tuple[Page, dict[str, Any]]:
    rc = t.receivers
    shape, values = _shape(
        page,
        {"tenant_id": tenant_id},
        {
            "name": where.name,
            "type": where.type,
            "version": where.version,
            "fingerprint": where.fingerprint,
        },
    )
    build = lambda: _paged(rc, [rc.c.tenant_id == _p("tenant_id")], shape)  # noqa: E731
    return sql.page(("receivers", shape), build), values


_EVENT_RANGES: dict[str, _Range] = {
    "since": ("created_at", lambda column, param: column >= param),
    "until": ("created_at", lambda column, param: column < param),
}


def events_page(
    sql: Statements,
    tenant_id: str,
    where: EventFilter,
    page: PageRequest,
    time: Callable[[datetime], Any],
) -> tuple[Page, dict[str, Any]]:
    """`time` turns a datetime into the driver's value (the store's codec)."""
    ev = t.events
    shape, values = _shape(
        page,
        {"tenant_id": tenant_id},
        {
            "name": where.name,
            "version": where.version,
            "release": where.release,
            "platform_id": where.platform_id,
            "package": where.package,
            "success": where.success,
            "event_receiver_id": where.event_receiver_id,
            "since": None if where.since is None else time(where.since),
            "until": None if where.until is None else time(where.until),
        },
    )
    build = lambda: _paged(ev, [ev.c.tenant_id == _p("tenant_id")], shape, _EVENT_RANGES)  # noqa: E731
    return sql.page(("events", shape), build), values


def groups_page(
    sql: Statements, tenant_id: str, where: GroupFilter, page: PageRequest
) -> tuple[Page, dict[str, Any]]:
    gr = t.groups
    shape, values = _shape(
        page,
        {"tenant_id": tenant_id},
        {
            "name": where.name,
            "type": where.type,
            "version": where.version,
            "enabled": where.enabled,
        },
    )
    build = lambda: _paged(gr, [gr.c.tenant_id == _p("tenant_id")], shape)  # noqa: E731
    return sql.page(("groups", shape), build), values


def completions_page(
    sql: Statements, tenant_id: str, group_id: str, where: CompletionFilter, page: PageRequest
) -> tuple[Page, dict[str, Any]]:
    cm = t.completions
    shape, values = _shape(
        page,
        {"tenant_id": tenant_id, "group_id": group_id},
        {
            "name": where.name,
            "version": where.version,
            "release": where.release,
            "platform_id": where.platform_id,
            "package": where.package,
        },
    )
    where_ = [cm.c.tenant_id == _p("tenant_id"), cm.c.group_id == _p("group_id")]
    return sql.page(("completions", shape), lambda: _paged(cm, where_, shape)), values


# --- PostgreSQL: a whole append in one statement -------------------------------------------
# The log rows, the head, the events, the latest rows, the completions and the checkpoint
# go in one round trip: data-modifying CTEs, one per table that has rows. A table with one
# row takes it as VALUES, one parameter per column; a table with more takes `unnest`ed
# column arrays, one parameter per column whatever the number of rows (arrays cost more
# to encode and unnest than one row's scalars: a single event is the common write). Each
# shape (none, one or many rows per table) is its own statement, made the first time it
# is needed. Rare changes (tenants, receivers, groups) use their own statements.

LOG_TYPES = ("bigint", "text", "text", "integer", "text", "integer", "text", "text", "text",
             "timestamptz", "text")  # fmt: skip
EVENT_TYPES = ("text",) * 9 + ("boolean", "text", "timestamptz")
LATEST_TYPES = ("text",) * 7
COMPLETION_TYPES = ("text",) * 10 + ("timestamptz",)
IDEMPOTENCY_TYPES = ("text", "text", "text", "integer", "text", "text", "bytea", "timestamptz")


class _Part:
    """One table of the one-statement append."""

    def __init__(
        self,
        prefix: str,
        table: str,
        columns: tuple[str, ...],
        types: tuple[str, ...],
        *,
        tenant: bool,
        conflict: str = "",
    ) -> None:
        self.prefix, self.table, self.columns, self.types = prefix, table, columns, types
        self.tenant = tenant  # the tenant comes from `:tenant_id`, not from each row
        self.conflict = conflict
        self.args = tuple(f"{prefix}_{name}" for name in columns)

    def insert(self, many: bool) -> str:
        names = (["tenant_id"] if self.tenant else []) + list(self.columns)
        casts = [f"CAST(:{arg} AS {kind}{'[]' if many else ''})"
                 for arg, kind in zip(self.args, self.types, strict=True)]  # fmt: skip
        tenant = ["CAST(:tenant_id AS text)"] if self.tenant else []
        # table, columns and types are constants of this module: nothing comes from outside
        head = f"INSERT INTO {self.table} ({', '.join(names)})\n    "
        if many:
            unnest = ",\n        ".join(casts)
            body = f"SELECT {''.join(t + ', ' for t in tenant)}* FROM unnest(\n        {unnest})"  # noqa: S608
        else:
            body = f"VALUES ({', '.join(tenant + casts)})"
        return head + body + (f"\n    {self.conflict}" if self.conflict else "")


PG_PARTS = (
    _Part("log", "log", LOG[1:], LOG_TYPES, tenant=True),
    _Part("event", "events", EVENTS, EVENT_TYPES, tenant=False),
    _Part(
        "latest",
        "latest",
        LATEST[1:],
        LATEST_TYPES,
        tenant=True,
        conflict=f"ON CONFLICT (tenant_id, receiver_id, {', '.join(NVRPP)}) "
        "DO UPDATE SET event_id = EXCLUDED.event_id",
    ),
    _Part("completion", "completions", COMPLETIONS, COMPLETION_TYPES, tenant=False),
    _Part("idem", "idempotency_records", IDEMPOTENCY, IDEMPOTENCY_TYPES, tenant=False),
)
"""The tables of the one-statement append, in the order of its arguments. `log` and
`latest` take the tenant from `:tenant_id`; the others carry it per row (an
Idempotency-Key record's key space may be the platform's, not the writer's tenant)."""

NONE, ONE, MANY = 0, 1, 2


def pg_write(shape: tuple[int, ...]) -> tuple[str, tuple[str, ...]]:
    """The one-statement append for a shape (NONE, ONE or MANY rows for each of `PG_PARTS`)
    and its arguments, in the order the text uses them: `tenant_id`, `checkpoint`, `head`
    (when there are log rows), then each present table's columns (scalars for ONE, arrays
    for MANY)."""
    args = ["tenant_id", "checkpoint"]
    ctes = [
        "checkpoint AS (\n    INSERT INTO checkpoints (tenant_id, position)\n"
        "    VALUES (CAST(:tenant_id AS text), CAST(:checkpoint AS bigint))\n"
        "    ON CONFLICT (tenant_id) DO UPDATE SET position = EXCLUDED.position\n)"
    ]
    if shape[0] != NONE:
        args.append("head")
        ctes.append(
            "head AS (\n    UPDATE log_heads SET position = CAST(:head AS bigint)\n"
            "    WHERE tenant_id = CAST(:tenant_id AS text)\n)"
        )
    for part, rows in zip(PG_PARTS, shape, strict=True):
        if rows != NONE:
            ctes.append(f"{part.prefix}_rows AS (\n    {part.insert(rows == MANY)}\n)")
            args.extend(part.args)
    return "WITH\n" + ",\n".join(ctes) + "\nSELECT 1", tuple(args)
