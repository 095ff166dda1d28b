"""Every table of the SQL store, in one MetaData: the declared schema the migrations must equal.

The log
    `log` is append-only: (tenant_id, position) is the primary key, with positions
    gap-free per tenant in commit order (see docs/explanation/log-positions.md);
    `log_heads` holds each tenant's last position and its row is the tenant's
    writer lock on PostgreSQL. `data` is msgspec-encoded JSON kept as text: it is
    written and read whole, never queried, so JSONB parsing would be paid for nothing.

Read models
    `tenants`, `receivers`, `events`, `groups` (+ `group_members`), `latest`,
    `completions` and each tenant's `checkpoints` row. They are updated in the
    append's transaction and can be emptied and rebuilt from the log.

Indexes (PostgreSQL serves every list filter from them; every index costs each insert)
    events: the primary key (tenant_id, id) walks a tenant's events in id order,
    which serves the unfiltered list, keyset pages in both orders and the cheap
    filters (`success`, and any filter that matches many rows) as a filter on
    that walk. Three more: (tenant_id, event_receiver_id, id) for "events of a
    receiver"; (tenant_id, name, version, release, platform_id, package, id) for an
    artifact or any leading part of its NVRPP (the full key comes out in id order);
    (tenant_id, created_at) for since/until ranges, which ids cannot bound because
    ids and times come from different ports. Four btrees per event is the budget.
    receivers: (tenant_id, id) and the unique triple (tenant_id, name, type,
    version), which also serves name / name+type filters. groups: (tenant_id, id)
    only: a tenant has few groups, a walk is cheap. group_members: (tenant_id,
    receiver_id, group_id) answers "groups containing these receivers" on the hot
    path; (tenant_id, group_id) finds a group's rows when it changes.
    completions: (tenant_id, id) and (tenant_id, group_id, name, version, release,
    platform_id, package, id): a group's completions, for an artifact or not.
    latest: its primary key is the lookup key itself.

Idempotency-Key records
    `idempotency_records`: one row per (tenant_id, key), written in the transaction of
    the write it answers (`core.domain.idempotency`); not a read model (a rebuild keeps
    them). Its primary key is the lookup and what makes a concurrent duplicate wait;
    `created_at` serves the retention task.

Strings are TEXT; times are `UtcDateTime` (timestamptz on PostgreSQL, fixed-width
text in UTC on SQLite), so they round-trip exactly, microseconds included.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


def to_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is refused (its meaning would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"a naive datetime cannot be stored: {value!r}")
    return value.astimezone(UTC)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An aware datetime stored in UTC; read back aware, in UTC, to the microsecond.

    PostgreSQL keeps `timestamptz`. SQLite keeps SQLAlchemy's fixed-width
    "YYYY-MM-DD HH:MM:SS.ffffff" text of the UTC time, so text order is time order.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = to_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

_NVRPP = ("name", "version", "release", "platform_id", "package")


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str) -> sa.Column[datetime]:
    return sa.Column(name, UtcDateTime(), nullable=False)


def _nvrpp() -> list[sa.Column[str]]:
    return [_text(name) for name in _NVRPP]


# --- the log -------------------------------------------------------------------------------

log = sa.Table(
    "log",
    metadata,
    _text("tenant_id"),
    sa.Column("position", sa.BigInteger(), nullable=False, autoincrement=False),
    _text("id"),
    _text("stream"),
    sa.Column("stream_version", sa.Integer(), nullable=False),
    _text("type"),
    sa.Column("schema_version", sa.Integer(), nullable=False),
    _text("correlation_id", nullable=True),
    _text("causation_id", nullable=True),
    _text("actor"),
    _time("occurred_at"),
    _text("data"),
    sa.PrimaryKeyConstraint("tenant_id", "position", name="pk_log"),
    sa.UniqueConstraint("id", name="uq_log_id"),
    sa.UniqueConstraint("tenant_id", "stream", "stream_version", name="uq_log_stream_version"),
)

log_heads = sa.Table(
    "log_heads",
    metadata,
    _text("tenant_id"),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", name="pk_log_heads"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    _text("tenant_id"),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", name="pk_checkpoints"),
)

replay_progress = sa.Table(
    "replay_progress",
    metadata,
    _text("run"),
    _text("tenant_id"),
    sa.PrimaryKeyConstraint("run", "tenant_id", name="pk_replay_progress"),
)
"""The tenants a replay run (`waypost replay`) has rebuilt, each written in its tenant's
rebuild transaction: a run that stops goes on with the tenants it has not done."""

# --- read models ---------------------------------------------------------------------------

tenants = sa.Table(
    "tenants",
    metadata,
    _text("id"),
    _text("slug"),
    _text("name"),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    _time("created_at"),
    _time("updated_at"),
    sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    sa.UniqueConstraint("slug", name="uq_tenants_slug"),
)

receivers = sa.Table(
    "receivers",
    metadata,
    _text("tenant_id"),
    _text("id"),
    _text("name"),
    _text("type"),
    _text("version"),
    _text("description"),
    _text("schema"),  # JSON text
    _text("fingerprint"),
    _time("created_at"),
    sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_receivers"),
    sa.UniqueConstraint("tenant_id", "name", "type", "version", name="uq_receivers_triple"),
    sa.Index("ix_receivers_fingerprint", "tenant_id", "fingerprint", "id"),
)

events = sa.Table(
    "events",
    metadata,
    _text("tenant_id"),
    _text("id"),
    *_nvrpp(),
    _text("description"),
    _text("payload"),  # JSON text
    sa.Column("success", sa.Boolean(), nullable=False),
    _text("event_receiver_id"),
    _time("created_at"),
    sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_events"),
    sa.Index("ix_events_receiver", "tenant_id", "event_receiver_id", "id"),
    sa.Index("ix_events_nvrpp", "tenant_id", *_NVRPP, "id"),
    sa.Index("ix_events_created", "tenant_id", "created_at"),
)

groups = sa.Table(
    "groups",
    metadata,
    _text("tenant_id"),
    _text("id"),
    _text("name"),
    _text("type"),
    _text("version"),
    _text("description"),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    _text("event_receiver_ids"),  # JSON array, in the group's order
    _time("created_at"),
    _time("updated_at"),
    sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_groups"),
)

group_members = sa.Table(
    "group_members",
    metadata,
    _text("tenant_id"),
    _text("receiver_id"),
    _text("group_id"),
    sa.PrimaryKeyConstraint("tenant_id", "receiver_id", "group_id", name="pk_group_members"),
    sa.Index("ix_group_members_group", "tenant_id", "group_id"),
)

latest = sa.Table(
    "latest",
    metadata,
    _text("tenant_id"),
    _text("receiver_id"),
    *_nvrpp(),
    _text("event_id"),
    sa.PrimaryKeyConstraint("tenant_id", "receiver_id", *_NVRPP, name="pk_latest"),
)

completions = sa.Table(
    "completions",
    metadata,
    _text("tenant_id"),
    _text("id"),
    _text("group_id"),
    *_nvrpp(),
    _text("triggering_event_id"),
    _text("member_event_ids"),  # JSON array
    _time("completed_at"),
    sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_completions"),
    sa.Index("ix_completions_group", "tenant_id", "group_id", *_NVRPP, "id"),
)

# --- Idempotency-Key records ---------------------------------------------------------------

idempotency_records = sa.Table(
    "idempotency_records",
    metadata,
    _text("tenant_id"),  # "" for the platform's routes
    _text("key"),
    _text("fingerprint"),
    sa.Column("status", sa.Integer(), nullable=False),
    _text("content_type"),
    _text("location", nullable=True),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    _time("created_at"),
    sa.PrimaryKeyConstraint("tenant_id", "key", name="pk_idempotency_records"),
    sa.Index("ix_idempotency_records_created", "created_at"),
)

READ_MODELS: tuple[sa.Table, ...] = (
    tenants,
    receivers,
    events,
    groups,
    group_members,
    latest,
    completions,
    checkpoints,
)
"""What a rebuild empties: every read model and the checkpoints, never the log or its heads."""

# The identity and delivery tables live in modules of their own on the same MetaData;
# importing them here means anything that reads `metadata` (migrations, the drift test)
# sees them too.
from adapters.sql import delivery_tables, identity_tables  # noqa: E402, F401
