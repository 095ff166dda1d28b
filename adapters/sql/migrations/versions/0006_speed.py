"""SQLite: `latest` WITHOUT ROWID.

Revision ID: 0006
Revises: 0005
Create Date: 2026-02-01

`latest` is looked up and upserted by its whole primary key, and every recorded event
upserts a row of it. As a rowid table SQLite keeps two b-trees for it (the rows by
rowid, and the primary key's index); WITHOUT ROWID keeps one, ordered by the primary key
(bench/layout.py measures it). SQLite cannot change that in place: the table is made
again and its rows copied. PostgreSQL has no rowid: nothing changes there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NVRPP = ("name", "version", "release", "platform_id", "package")
COLUMNS = ("tenant_id", "receiver_id", *NVRPP, "event_id")


def _remake_latest(*, with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_table(
        "latest_remade",
        *(sa.Column(name, sa.Text(), nullable=False) for name in COLUMNS),
        sa.PrimaryKeyConstraint("tenant_id", "receiver_id", *NVRPP, name="pk_latest"),
        sqlite_with_rowid=with_rowid,
    )
    columns = ", ".join(COLUMNS)
    op.execute(f"INSERT INTO latest_remade ({columns}) SELECT {columns} FROM latest")  # noqa: S608
    op.drop_table("latest")
    op.rename_table("latest_remade", "latest")


def upgrade() -> None:
    _remake_latest(with_rowid=False)


def downgrade() -> None:
    _remake_latest(with_rowid=True)
