"""The initial schema: the log, its heads, checkpoints and the read models.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Written by hand to equal adapters/sql/tables.py (tests/integration/test_sql_migrations.py
checks it). Strings are TEXT, times timestamptz (SQLite: DATETIME text in UTC), JSON is
kept as TEXT. See tables.py for why each index exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NVRPP = ("name", "version", "release", "platform_id", "package")


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _nvrpp() -> list[sa.Column[str]]:
    return [_text(name) for name in NVRPP]


def upgrade() -> None:
    op.create_table(
        "log",
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
    op.create_table(
        "log_heads",
        _text("tenant_id"),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_log_heads"),
    )
    op.create_table(
        "checkpoints",
        _text("tenant_id"),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_checkpoints"),
    )
    op.create_table(
        "tenants",
        _text("id"),
        _text("slug"),
        _text("name"),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("slug", name="uq_tenants_slug"),
    )
    op.create_table(
        "receivers",
        _text("tenant_id"),
        _text("id"),
        _text("name"),
        _text("type"),
        _text("version"),
        _text("description"),
        _text("schema"),
        _text("fingerprint"),
        _time("created_at"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_receivers"),
        sa.UniqueConstraint("tenant_id", "name", "type", "version", name="uq_receivers_triple"),
    )
    op.create_table(
        "events",
        _text("tenant_id"),
        _text("id"),
        *_nvrpp(),
        _text("description"),
        _text("payload"),
        sa.Column("success", sa.Boolean(), nullable=False),
        _text("event_receiver_id"),
        _time("created_at"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_events"),
    )
    op.create_index("ix_events_receiver", "events", ["tenant_id", "event_receiver_id", "id"])
    op.create_index("ix_events_nvrpp", "events", ["tenant_id", *NVRPP, "id"])
    op.create_index("ix_events_created", "events", ["tenant_id", "created_at"])
    op.create_table(
        "groups",
        _text("tenant_id"),
        _text("id"),
        _text("name"),
        _text("type"),
        _text("version"),
        _text("description"),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _text("event_receiver_ids"),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_groups"),
    )
    op.create_table(
        "group_members",
        _text("tenant_id"),
        _text("receiver_id"),
        _text("group_id"),
        sa.PrimaryKeyConstraint("tenant_id", "receiver_id", "group_id", name="pk_group_members"),
    )
    op.create_index("ix_group_members_group", "group_members", ["tenant_id", "group_id"])
    op.create_table(
        "latest",
        _text("tenant_id"),
        _text("receiver_id"),
        *_nvrpp(),
        _text("event_id"),
        sa.PrimaryKeyConstraint("tenant_id", "receiver_id", *NVRPP, name="pk_latest"),
    )
    op.create_table(
        "completions",
        _text("tenant_id"),
        _text("id"),
        _text("group_id"),
        *_nvrpp(),
        _text("triggering_event_id"),
        _text("member_event_ids"),
        _time("completed_at"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_completions"),
    )
    op.create_index("ix_completions_group", "completions", ["tenant_id", "group_id", *NVRPP, "id"])


def downgrade() -> None:
    for index, table in (
        ("ix_completions_group", "completions"),
        ("ix_group_members_group", "group_members"),
        ("ix_events_created", "events"),
        ("ix_events_nvrpp", "events"),
        ("ix_events_receiver", "events"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "completions",
        "latest",
        "group_members",
        "groups",
        "events",
        "receivers",
        "tenants",
        "checkpoints",
        "log_heads",
        "log",
    ):
        op.drop_table(table)
