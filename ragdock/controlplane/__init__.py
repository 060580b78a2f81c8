"""The control plane: one transactional store for everything gateway replicas must agree on.

The document catalog (collections with their generation, live documents, staged and retired
revisions with their leases) and the adapter registry's records (versions, aliases with history,
eval verdicts, the audit log) live here; vectors stay in Qdrant and adapter weights stay files.

Two backends, one schema and one code path (SQLAlchemy Core):
- SQLite, the embedded default: one file in the data dir, for one machine. SQLite's locking is
  not reliable on network file systems, so it is not for a volume shared by several hosts.
- PostgreSQL (`RAGDOCK_DATABASE_URL=postgresql+psycopg://...`), which several replicas share.

Schema changes are alembic migrations (`migrations/versions/`), applied on open and serialized
across replicas (an advisory lock on PostgreSQL, a write transaction on SQLite).
"""

from ragdock.controlplane.store import ControlPlane, open_control_plane

__all__ = ["ControlPlane", "open_control_plane"]
