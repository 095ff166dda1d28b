"""An index on receivers' fingerprints: finding a receiver by its content (GraphQL's
`event_receivers_by_fingerprint`, `GET /api/v1/receivers?fingerprint=`) reads an index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-02-01

Written by hand to equal adapters/sql/tables.py (the migrations test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_receivers_fingerprint", "receivers", ["tenant_id", "fingerprint", "id"])


def downgrade() -> None:
    op.drop_index("ix_receivers_fingerprint", table_name="receivers")
