"""Identity, access and secrets: users, API keys, refresh families, revocations, secrets, audit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02

Written by hand to equal adapters/sql/identity_tables.py (the migrations test
compares them). `tenant_id` is "" for the platform's rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


_INDEXES = (
    ("ix_users_tenant", "users", ["tenant_id", "id"]),
    ("ix_api_keys_tenant", "api_keys", ["tenant_id", "id"]),
    ("ix_refresh_families_subject", "refresh_families", ["tenant_id", "subject", "state"]),
    ("ix_refresh_tokens_family", "refresh_tokens", ["family_id"]),
    ("ix_revoked_tokens_expires", "revoked_tokens", ["expires_at"]),
    ("ix_audit_log_tenant", "audit_log", ["tenant_id", "id"]),
    ("ix_audit_log_action", "audit_log", ["tenant_id", "action", "id"]),
)


def upgrade() -> None:
    op.create_table(
        "users",
        _text("id"),
        _text("tenant_id"),
        _text("username"),
        _text("roles"),
        _text("password_hash"),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("tenant_id", "username", name="uq_users_username"),
    )
    op.create_table(
        "api_keys",
        _text("id"),
        _text("tenant_id"),
        _text("name"),
        _text("prefix"),
        _text("secret_hash"),
        _text("roles"),
        _time("created_at"),
        _text("created_by"),
        _time("expires_at", nullable=True),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_table(
        "refresh_families",
        _text("id"),
        _text("tenant_id"),
        _text("subject"),
        _text("state"),
        _time("created_at"),
        _time("expires_at"),
        _time("revoked_at", nullable=True),
        _text("revoked_reason", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_families"),
    )
    op.create_table(
        "refresh_tokens",
        _text("token_hash"),
        _text("family_id"),
        _text("state"),
        _time("issued_at"),
        _time("expires_at"),
        _time("used_at", nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_refresh_tokens"),
    )
    op.create_table(
        "revoked_tokens",
        _text("jti"),
        _time("expires_at"),
        sa.PrimaryKeyConstraint("jti", name="pk_revoked_tokens"),
    )
    op.create_table(
        "secret_versions",
        _text("tenant_id"),
        _text("name"),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        _text("state"),
        _text("public_id", nullable=True),
        _time("created_at"),
        _time("activated_at", nullable=True),
        _time("demoted_at", nullable=True),
        _time("verify_until", nullable=True),
        _time("retired_at", nullable=True),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", "version", name="pk_secret_versions"),
    )
    op.create_table(
        "audit_log",
        _text("id"),
        _text("tenant_id"),
        _time("at"),
        _text("actor"),
        _text("action"),
        _text("target"),
        _text("outcome"),
        _text("address", nullable=True),
        _text("request_id", nullable=True),
        _text("reason", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
    for table in (
        "audit_log",
        "secret_versions",
        "revoked_tokens",
        "refresh_tokens",
        "refresh_families",
        "api_keys",
        "users",
    ):
        op.drop_table(table)
