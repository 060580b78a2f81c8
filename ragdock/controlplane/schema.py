"""The control plane's tables, as SQLAlchemy Core objects the queries are written against.

The migrations under `migrations/versions/` create and change these tables; this module is the
current shape. Times are seconds since the epoch as floats, read from the database's own clock
(`ControlPlane.now`), so replicas with skewed clocks still agree on leases and grace periods.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row per collection that exists; `generation` changes on every create, so a catalog row of
# a dropped collection can never be mistaken for one of its re-created namesake. `seq` is the
# collection's staging counter: the read watermark of the freshness protocol.
collections = Table(
    "collections",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("generation", String(36), nullable=False, unique=True),
    Column("seq", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=True),  # the tenant (0002)
)

# The tenants that may see a collection besides its creator: those that created it again
# (a create of a taken name joins it), keyed by generation so a re-created namesake starts
# without them (0003).
collection_members = Table(
    "collection_members",
    metadata,
    Column("generation", String(36), primary_key=True),
    Column("tenant", String(128), primary_key=True),
)

# The live version of each document.
documents = Table(
    "documents",
    metadata,
    Column("generation", String(36), primary_key=True),
    Column("tenant", String(128), primary_key=True),
    Column("doc_id", String(512), primary_key=True),
    Column("version", String(128), nullable=False),
    Column("rev", String(36), nullable=False),
    Column("title", Text, nullable=False),
    Column("uri", Text, nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("chunk_count", Integer, nullable=False),
)

# Revisions whose points exist in the vector store but must not be seen: `staged` (a writer
# holds a lease on it until `lease_expires`) or `retired` (superseded at `retired_at`; its
# points are deleted once the grace period has passed).
revisions = Table(
    "revisions",
    metadata,
    Column("generation", String(36), primary_key=True),
    Column("rev", String(36), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("doc_id", String(512), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("state", String(8), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("lease_expires", Float, nullable=False),
    Column("retired_at", Float, nullable=True),
)

# Every adapter version ever pushed. A deleted version keeps its row (`deleted_at` set) so
# its label is never handed out again.
adapter_versions = Table(
    "adapter_versions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("number", Integer, nullable=True),
    Column("record", Text, nullable=False),
    Column("pushed_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
    Column("eval_report", Text, nullable=True),
    Column("gate_passed", Integer, nullable=True),
)

# Aliases (`prod`, `staging`, ...) and the versions they pointed at before (JSON list).
adapter_aliases = Table(
    "adapter_aliases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("history", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Who owns an adapter name (a tenant) and who may use it: that tenant, or every tenant
# (`shared`, managed by platform admins). Names pushed before owners existed have no row and
# count as shared (0002).
adapter_owners = Table(
    "adapter_owners",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("visibility", String(8), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", String(24), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(32), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=True),
    Column("alias", String(64), nullable=True),
    Column("detail", Text, nullable=True),
)
