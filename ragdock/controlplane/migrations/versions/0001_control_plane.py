"""The first control-plane schema: document catalog, revisions with leases, adapter registry.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("generation", sa.String(36), nullable=False, unique=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "documents",
        sa.Column("generation", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("doc_id", sa.String(512), primary_key=True),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("rev", sa.String(36), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
    )
    op.create_table(
        "revisions",
        sa.Column("generation", sa.String(36), primary_key=True),
        sa.Column("rev", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("doc_id", sa.String(512), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("lease_expires", sa.Float, nullable=False),
        sa.Column("retired_at", sa.Float, nullable=True),
        sa.CheckConstraint("state IN ('staged', 'retired')", name="revision_state"),
    )
    op.create_table(
        "adapter_versions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("number", sa.Integer, nullable=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("pushed_at", sa.Float, nullable=False),
        sa.Column("deleted_at", sa.Float, nullable=True),
        sa.Column("eval_report", sa.Text, nullable=True),
        sa.Column("gate_passed", sa.Integer, nullable=True),
    )
    op.create_table(
        "adapter_aliases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("history", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.String(24), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("alias", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )


def downgrade() -> None:
    for table in (
        "audit_log", "adapter_aliases", "adapter_versions", "revisions", "documents",
        "collections",
    ):  # fmt: skip
        op.drop_table(table)
