"""The tables of subscriptions and deliveries, on the one MetaData (`adapters.sql.tables`).

Subscriptions are not projected from the log (they publish nothing but the
ping and disabled messages): they are rows of their own, changed in place, with the
versions of their signing secret (sealed, `subscription_secrets`) beside them.

`delivery_checkpoints`
    The dispatcher's position in each tenant's log, and which dispatcher holds the
    tenant (a lease: `dispatcher`, `lease_until`). The row exists from the tenant's
    first subscription on; a new subscription's start is read under its lock.
`deliveries`
    One row per (subscription, message) (`uq_deliveries_message`), with the message's
    CloudEvent as sent (`body`, emptied once delivered: the log keeps the message).
    `attempted` (attempts > 0) keeps first attempts and retries apart: they have
    deliverers of their own. Indexes: `(status, attempted, next_attempt_at)` finds
    the due deliveries of either kind soonest first;
    `(tenant_id, subscription_id, id)` pages a subscription's deliveries and finds them
    all when it goes; `(subscription_id, ordering_key, position)` answers "is an
    earlier delivery of this artifact unfinished?" for ordering `artifact`.
`delivery_attempts`
    Every attempt: when, how long, the status code or the error, the start of the
    answer's body.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from adapters.sql.tables import UtcDateTime, metadata


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, UtcDateTime(), nullable=nullable)


def _int(name: str, *, big: bool = False, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger() if big else sa.Integer(), nullable=nullable)


subscriptions = sa.Table(
    "subscriptions",
    metadata,
    _text("tenant_id"),
    _text("id"),
    _text("name"),
    _text("url"),
    _text("description"),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    _text("filter"),  # JSON object
    _text("ordering"),
    _time("created_at"),
    _time("updated_at"),
    _text("disabled_reason", nullable=True),
    _int("start_position", big=True),
    _time("failing_since", nullable=True),
    _int("disables"),
    _int("announced"),
    sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_subscriptions"),
)

subscription_secrets = sa.Table(
    "subscription_secrets",
    metadata,
    _text("tenant_id"),
    _text("subscription_id"),
    _int("version"),
    _text("state"),
    _time("created_at"),
    _time("activated_at", nullable=True),
    _time("demoted_at", nullable=True),
    _time("verify_until", nullable=True),
    _time("retired_at", nullable=True),
    sa.Column("envelope", sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint(
        "tenant_id", "subscription_id", "version", name="pk_subscription_secrets"
    ),
)

delivery_checkpoints = sa.Table(
    "delivery_checkpoints",
    metadata,
    _text("tenant_id"),
    _int("position", big=True),
    _text("dispatcher", nullable=True),
    _time("lease_until", nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", name="pk_delivery_checkpoints"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    _text("id"),
    _text("tenant_id"),
    _text("subscription_id"),
    _text("message_id"),
    _text("message_type"),
    _int("position", big=True),
    _text("ordering_key", nullable=True),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    _text("status"),
    _int("attempts"),
    _int("round_attempts"),
    sa.Column("attempted", sa.Boolean(), nullable=False),
    _time("next_attempt_at", nullable=True),
    _time("last_attempt_at", nullable=True),
    _int("last_status_code", nullable=True),
    _text("last_error", nullable=True),
    _time("message_time"),
    _time("created_at"),
    _text("claimed_by", nullable=True),
    _time("lease_until", nullable=True),
    _text("correlation_id", nullable=True),
    _text("causation_id", nullable=True),
    sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
    sa.UniqueConstraint("subscription_id", "message_id", name="uq_deliveries_message"),
    sa.Index("ix_deliveries_due", "status", "attempted", "next_attempt_at"),
    sa.Index("ix_deliveries_subscription", "tenant_id", "subscription_id", "id"),
    sa.Index("ix_deliveries_ordering", "subscription_id", "ordering_key", "position"),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    _text("delivery_id"),
    _int("number"),
    _text("tenant_id"),
    _time("started_at"),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    _int("status_code", nullable=True),
    _text("error", nullable=True),
    _text("response_excerpt"),
    sa.PrimaryKeyConstraint("delivery_id", "number", name="pk_delivery_attempts"),
)

TABLES = (subscriptions, subscription_secrets, delivery_checkpoints, deliveries, delivery_attempts)
