"""Quotas: rate windows every replica charges, and the stored bytes of each live document.

`rate_windows` holds one row per subject (`key:<tenant>/<name>` or `tenant:<tenant>`) and fixed
60 s window: the requests and tokens charged in it, incremented atomically by every replica.
`documents.text_bytes` is the UTF-8 size of a live document's text, the unit of the stored-bytes
quota; documents written before it count 0 until they are written again.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("subject", sa.String(300), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rate_windows_start", "rate_windows", ["window_start"])
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("text_bytes", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index("ix_documents_tenant", "documents", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_documents_tenant", "documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("text_bytes")
    op.drop_index("ix_rate_windows_start", "rate_windows")
    op.drop_table("rate_windows")
