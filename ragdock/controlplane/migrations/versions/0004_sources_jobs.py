"""Sources and their sync jobs: where a collection's documents come from, and the work queue.

A source (a folder, a SQL query) belongs to a tenant and a collection. `source_items` records
what each sync ingested from it (content hash, stat fingerprint, the job that last saw it), so a
sync ingests only what changed and deletes only what it put there. A job is one sync, claimed by
any worker under a lease; `active` is 1 while it is queued or running and NULL after, so the
unique key on (source_id, active) allows at most one live job per source on both backends.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("interval_s", sa.Float, nullable=True),
        sa.Column("full_every", sa.Integer, nullable=False),
        sa.Column("cursor", sa.Text, nullable=True),
        sa.Column("generation", sa.String(36), nullable=True),
        sa.Column("syncs", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("last_success_at", sa.Float, nullable=True),
        sa.Column("deleted_at", sa.Float, nullable=True),
        sa.UniqueConstraint("tenant", "name", name="uq_sources_tenant_name"),
    )
    op.create_table(
        "source_items",
        sa.Column("source_id", sa.String(36), primary_key=True),
        sa.Column("item_key", sa.String(512), primary_key=True),
        sa.Column("doc_id", sa.String(512), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("seen_job", sa.String(36), nullable=True),
        sa.Column("synced_at", sa.Float, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("source_id", sa.String(36), nullable=False, index=True),
        sa.Column("tenant", sa.String(128), nullable=False, index=True),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("trigger", sa.String(12), nullable=False),
        sa.Column("state", sa.String(12), nullable=False, index=True),
        sa.Column("active", sa.Integer, nullable=True),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("lease_expires", sa.Float, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Integer, nullable=False),
        sa.Column("cursor_from", sa.Text, nullable=True),
        sa.Column("progress", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("attempt_started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.UniqueConstraint("source_id", "active", name="uq_jobs_one_active"),
    )
    op.create_table(
        "job_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), nullable=False, index=True),
        sa.Column("item_key", sa.String(512), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_errors")
    op.drop_table("jobs")
    op.drop_table("source_items")
    op.drop_table("sources")
