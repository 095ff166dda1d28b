"""Idempotency-Key records, committed with the writes they answer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-02-02

Written by hand to equal `idempotency_records` in adapters/sql/tables.py (the migrations
test compares them). `tenant_id` is "" for the platform's routes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "idempotency_records",
        _text("tenant_id"),
        _text("key"),
        _text("fingerprint"),
        sa.Column("status", sa.Integer(), nullable=False),
        _text("content_type"),
        _text("location", nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key", name="pk_idempotency_records"),
    )
    op.create_index("ix_idempotency_records_created", "idempotency_records", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_records_created", table_name="idempotency_records")
    op.drop_table("idempotency_records")
