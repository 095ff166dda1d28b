"""Subscriptions and deliveries: subscriptions, their secrets, deliveries, attempts, checkpoints.

Revision ID: 0006
Revises: 0005 (0005_idempotency)
Create Date: 2026-03-01

Written by hand to equal adapters/sql/delivery_tables.py (the migrations test
compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _int(name: str, *, big: bool = False, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger() if big else sa.Integer(), nullable=nullable)


_INDEXES = (
    ("ix_deliveries_due", "deliveries", ["status", "attempted", "next_attempt_at"]),
    ("ix_deliveries_subscription", "deliveries", ["tenant_id", "subscription_id", "id"]),
    ("ix_deliveries_ordering", "deliveries", ["subscription_id", "ordering_key", "position"]),
)


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        _text("tenant_id"),
        _text("id"),
        _text("name"),
        _text("url"),
        _text("description"),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _text("filter"),
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
    op.create_table(
        "subscription_secrets",
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
    op.create_table(
        "delivery_checkpoints",
        _text("tenant_id"),
        _int("position", big=True),
        _text("dispatcher", nullable=True),
        _time("lease_until", nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_delivery_checkpoints"),
    )
    op.create_table(
        "deliveries",
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
    )
    op.create_table(
        "delivery_attempts",
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
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
    for table in (
        "delivery_attempts",
        "deliveries",
        "delivery_checkpoints",
        "subscription_secrets",
        "subscriptions",
    ):
        op.drop_table(table)
