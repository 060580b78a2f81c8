"""Collection members: the tenants that created a collection by name, besides its first creator.

Collection names are one namespace; each tenant sees only its own documents in a collection,
and only the collections it created (first, or again: a create of a taken name joins it) or
has documents in. A name it may not see answers as one nobody uses.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collection_members",
        sa.Column("generation", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(128), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("collection_members")
