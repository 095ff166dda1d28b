"""Operations: an index on the audit log's time, for the retention purge (`audit.retention_days`),
and the progress of replay runs (`waypost replay`, resumable).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Written by hand to equal adapters/sql/identity_tables.py (the migrations test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "replay_progress",
        sa.Column("run", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run", "tenant_id", name="pk_replay_progress"),
    )


def downgrade() -> None:
    op.drop_table("replay_progress")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
