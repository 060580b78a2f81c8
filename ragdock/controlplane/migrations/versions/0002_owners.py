"""Owners: which tenant created a collection; which tenant owns an adapter, and who may use it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for collections made before owners were recorded: listed to every tenant that has
    # documents in them, as before, and to no one else.
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("created_by", sa.String(128), nullable=True))
    op.create_table(
        "adapter_owners",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("visibility", sa.String(8), nullable=False),
        sa.CheckConstraint("visibility IN ('tenant', 'shared')", name="adapter_visibility"),
    )


def downgrade() -> None:
    op.drop_table("adapter_owners")
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("created_by")
