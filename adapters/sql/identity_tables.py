"""The identity tables, declared on the store's one MetaData (`adapters.sql.tables.metadata`).

`adapters/sql/migrations/versions/0002_identity.py` creates them; the test that
migrations equal the declared schema covers them once this module is imported
(`adapters.sql.tables` imports it at its end, so whoever loads the schema loads
these too).

`tenant_id` is "" for the platform (its administrators, secrets and audit log):
an empty string, not NULL, so that the unique (tenant_id, username) holds for
platform users as well (NULLs never collide in a unique index).

    users              unique (tenant_id, username); (tenant_id, id) lists a tenant's users
    api_keys           unique prefix (the lookup of every request); (tenant_id, id) lists
    refresh_families   (tenant_id, subject, state): a principal's active families
    refresh_tokens     the token hash is the key; (family_id) for a family's tokens
    revoked_tokens     jti -> until when it matters; (expires_at) for the purge
    secret_versions    (tenant_id, name, version); the value only ever sealed (envelope)
    audit_log          append-only; (tenant_id, id) pages a tenant's records in order,
                       (tenant_id, action, id) serves the usual filter; (at) finds
                       what the retention purge deletes
"""

from __future__ import annotations

import sqlalchemy as sa

from adapters.sql.tables import UtcDateTime, metadata

__all__ = [
    "PLATFORM",
    "api_keys",
    "audit_log",
    "refresh_families",
    "refresh_tokens",
    "revoked_tokens",
    "secret_versions",
    "users",
]

#: The `tenant_id` of the platform's rows.
PLATFORM = ""


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, UtcDateTime(), nullable=nullable)


users = sa.Table(
    "users",
    metadata,
    _text("id"),
    _text("tenant_id"),
    _text("username"),
    _text("roles"),  # JSON array
    _text("password_hash"),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    _time("created_at"),
    _time("updated_at"),
    sa.PrimaryKeyConstraint("id", name="pk_users"),
    sa.UniqueConstraint("tenant_id", "username", name="uq_users_username"),
    sa.Index("ix_users_tenant", "tenant_id", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _text("id"),
    _text("tenant_id"),
    _text("name"),
    _text("prefix"),
    _text("secret_hash"),
    _text("roles"),  # JSON array
    _time("created_at"),
    _text("created_by"),
    _time("expires_at", nullable=True),
    _time("revoked_at", nullable=True),
    sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    sa.Index("ix_api_keys_tenant", "tenant_id", "id"),
)

refresh_families = sa.Table(
    "refresh_families",
    metadata,
    _text("id"),
    _text("tenant_id"),
    _text("subject"),
    _text("state"),
    _time("created_at"),
    _time("expires_at"),
    _time("revoked_at", nullable=True),
    _text("revoked_reason", nullable=True),
    sa.PrimaryKeyConstraint("id", name="pk_refresh_families"),
    sa.Index("ix_refresh_families_subject", "tenant_id", "subject", "state"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    _text("token_hash"),
    _text("family_id"),
    _text("state"),
    _time("issued_at"),
    _time("expires_at"),
    _time("used_at", nullable=True),
    sa.PrimaryKeyConstraint("token_hash", name="pk_refresh_tokens"),
    sa.Index("ix_refresh_tokens_family", "family_id"),
)

revoked_tokens = sa.Table(
    "revoked_tokens",
    metadata,
    _text("jti"),
    _time("expires_at"),
    sa.PrimaryKeyConstraint("jti", name="pk_revoked_tokens"),
    sa.Index("ix_revoked_tokens_expires", "expires_at"),
)

secret_versions = sa.Table(
    "secret_versions",
    metadata,
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

audit_log = sa.Table(
    "audit_log",
    metadata,
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
    sa.Index("ix_audit_log_tenant", "tenant_id", "id"),
    sa.Index("ix_audit_log_action", "tenant_id", "action", "id"),
    sa.Index("ix_audit_log_at", "at"),  # the retention purge (audit.retention_days)
)

TABLES: tuple[sa.Table, ...] = (
    users,
    api_keys,
    refresh_families,
    refresh_tokens,
    revoked_tokens,
    secret_versions,
    audit_log,
)
