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
    UniqueConstraint,
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
    Column("text_bytes", BigInteger, nullable=False, server_default="0"),  # (0005)
)

# Requests and tokens charged to a subject (`key:<tenant>/<name>`, `tenant:<tenant>`) in the
# fixed 60 s window starting at `window_start` (epoch seconds, the database's clock) (0005).
rate_windows = Table(
    "rate_windows",
    metadata,
    Column("subject", String(300), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
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
    # Whose entry: an adapter registry's or the reader registry's (0006).
    Column("kind", String(16), nullable=False, server_default="adapter"),
)

# Every grounding reader version ever pushed (0006), kept like adapter versions: a deleted one
# keeps its row so its label is never handed out again. `manifest` is the reader's manifest as
# it was validated at push (weights checked against its sha256): the promotion gate reads these
# figures, never the files, which nothing stops an operator from editing after the push.
reader_versions = Table(
    "reader_versions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("number", Integer, nullable=True),
    Column("record", Text, nullable=False),
    Column("manifest", Text, nullable=False),
    Column("pushed_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
)

# Reader aliases (`prod`, ...) and the versions they pointed at before (JSON list) (0006).
reader_aliases = Table(
    "reader_aliases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("history", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Where a collection's documents come from (0004): a folder or a SQL query, owned by a tenant.
# `spec` is JSON and holds references to credentials (an environment variable's or a secret
# file's name), never the credentials. `cursor` is a SQL source's incremental watermark (the
# highest `updated_at` its last successful sync read). `generation` is the collection
# generation its items went into: a dropped and re-created collection is refilled. `syncs`
# counts its successful syncs, so every `full_every`-th one is a full pass that also finds
# deletions. A deleted source keeps its row (`deleted_at`) until a purge job has removed its
# documents.
sources = Table(
    "sources",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("name", String(64), nullable=False),
    Column("collection", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("interval_s", Float, nullable=True),
    Column("full_every", Integer, nullable=False),
    Column("cursor", Text, nullable=True),
    Column("generation", String(36), nullable=True),
    Column("syncs", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("last_success_at", Float, nullable=True),
    Column("deleted_at", Float, nullable=True),
    UniqueConstraint("tenant", "name", name="uq_sources_tenant_name"),
)

# What syncs ingested from a source, by the item's key there (a relative path, a row id).
# `fingerprint` is a file's size and mtime: equal means the file was not even touched, so it is
# not read. `seen_job` is the last job that listed the item: after a full pass, the items it did
# not see are gone from the source.
source_items = Table(
    "source_items",
    metadata,
    Column("source_id", String(36), primary_key=True),
    Column("item_key", String(512), primary_key=True),
    Column("doc_id", String(512), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=True),
    Column("seen_job", String(36), nullable=True),
    Column("synced_at", Float, nullable=False),
)

# One sync of one source. States: queued, running, succeeded, failed, cancelled. `active` is 1
# while queued or running, NULL after: the unique key keeps one live job per source. A running
# job belongs to `owner` until `lease_expires`; past it, any worker may claim it and resume.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source_id", String(36), nullable=False, index=True),
    Column("tenant", String(128), nullable=False, index=True),
    Column("kind", String(12), nullable=False),
    Column("trigger", String(12), nullable=False),
    Column("state", String(12), nullable=False, index=True),
    Column("active", Integer, nullable=True),
    Column("owner", String(128), nullable=True),
    Column("lease_expires", Float, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("cancel_requested", Integer, nullable=False),
    Column("cursor_from", Text, nullable=True),
    Column("progress", Text, nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("attempt_started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    UniqueConstraint("source_id", "active", name="uq_jobs_one_active"),
)

# The items a job skipped, with why (a corrupt PDF, a row without text).
job_errors = Table(
    "job_errors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False, index=True),
    Column("item_key", String(512), nullable=False),
    Column("error", Text, nullable=False),
    Column("at", Float, nullable=False),
)
