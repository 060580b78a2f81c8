"""`EdgeStore`: Qdrant's engine embedded in-process (qdrant-edge-py), one shard per collection.

Layout: `<data_dir>/<collection>/` is the shard directory (WAL + segments). One process owns a
data dir: `EdgeStore` holds an exclusive lock on `<data_dir>/.owner.lock` while it is open, and a
second process is refused with `StoreInUseError` instead of corrupting the shards. Several
replicas need a Qdrant server (`RAGDOCK_QDRANT_URL`) instead.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.store.base import (
    DENSE,
    DOC_FIELD,
    GEN_FIELD,
    META_FIELD,
    REV_FIELD,
    SEQ_FIELD,
    SPARSE,
    TENANT_FIELD,
    UPDATED_FIELD,
    Hit,
    Scope,
    StoredPoint,
    StoreQuery,
    dense_of,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_collection_name(name: str) -> str:
    """Return `name` if it is a safe collection name (it becomes a directory name).

    Raises:
        ValueError: for anything but 1-64 letters, digits, '_' or '-' (not leading).
    """
    if not _NAME.match(name):
        raise ValueError(f"invalid collection name {name!r}: use 1-64 of [A-Za-z0-9_-]")
    return name


def edge_filter(scope: Scope) -> Any:
    """Translate a `Scope` into a qdrant-edge `Filter`."""
    import qdrant_edge as qe

    must: list[Any] = [qe.FieldCondition(key=TENANT_FIELD, match=qe.MatchValue(scope.tenant))]
    if scope.doc_ids is not None:
        must.append(qe.FieldCondition(key=DOC_FIELD, match=qe.MatchAny(list(scope.doc_ids))))
    if scope.revs is not None:
        must.append(qe.FieldCondition(key=REV_FIELD, match=qe.MatchAny(list(scope.revs))))
    for key, value in sorted(scope.metadata.items()):
        path = f"{META_FIELD}.{key}"
        if isinstance(value, float):
            must.append(qe.FieldCondition(key=path, range=qe.RangeFloat(gte=value, lte=value)))
        else:
            must.append(qe.FieldCondition(key=path, match=qe.MatchValue(value)))
    if scope.updated_from or scope.updated_before:
        window = qe.RangeDateTime(gte=scope.updated_from, lt=scope.updated_before)
        must.append(qe.FieldCondition(key=UPDATED_FIELD, range=window))
    must_not: list[Any] = []
    if scope.hidden_revs:
        hidden = qe.MatchAny(sorted(scope.hidden_revs))
        must_not.append(qe.FieldCondition(key=REV_FIELD, match=hidden))
    # Written as exclusions so that points without the field (written before the control
    # plane existed) are not excluded.
    if scope.generation is not None:
        other = qe.MatchExcept([scope.generation])
        must_not.append(qe.FieldCondition(key=GEN_FIELD, match=other))
    if scope.max_seq is not None:
        later = qe.RangeFloat(gt=float(scope.max_seq))
        must_not.append(qe.FieldCondition(key=SEQ_FIELD, range=later))
    return qe.Filter(must=must, must_not=must_not or None)


class StoreInUseError(RuntimeError):
    """Another process has the embedded store open."""


class EdgeStore:
    """Embedded Qdrant collections under `data_dir`.

    Args:
        data_dir: directory holding one shard directory per collection (created if absent).

    Raises:
        StoreInUseError: another process (or another open `EdgeStore`) holds the data dir.
    """

    def __init__(self, data_dir: Path) -> None:
        self._dir = Path(data_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._owner = _take_ownership(self._dir)
        self._shards: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _shard(self, name: str) -> Any:
        import qdrant_edge as qe

        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                path = self._dir / check_collection_name(name)
                if not path.is_dir():
                    raise KeyError(f"collection {name!r} does not exist")
                shard = self._shards[name] = qe.EdgeShard.load(str(path))
            return shard

    def create_collection(self, name: str, dim: int) -> None:
        """Create the shard with both vectors and the payload indexes (idempotent)."""
        import qdrant_edge as qe

        path = self._dir / check_collection_name(name)
        if path.is_dir():
            return
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        shard = qe.EdgeShard.create(str(path), config)
        shard.update(
            qe.UpdateOperation.create_field_index(
                TENANT_FIELD, qe.KeywordIndexParams(is_tenant=True)
            )
        )
        for keyword in (DOC_FIELD, REV_FIELD, GEN_FIELD):
            shard.update(
                qe.UpdateOperation.create_field_index(keyword, qe.PayloadSchemaType.Keyword)
            )
        shard.update(
            qe.UpdateOperation.create_field_index(UPDATED_FIELD, qe.PayloadSchemaType.Datetime)
        )
        shard.update(qe.UpdateOperation.create_field_index(SEQ_FIELD, qe.PayloadSchemaType.Integer))
        with self._lock:
            self._shards[name] = shard

    def list_collections(self) -> list[str]:
        """Names of the shard directories."""
        return sorted(p.name for p in self._dir.iterdir() if p.is_dir() and _NAME.match(p.name))

    def collection_exists(self, name: str) -> bool:
        """Whether the shard directory exists."""
        return (self._dir / check_collection_name(name)).is_dir()

    def delete_collection(self, name: str) -> None:
        """Close and remove the shard directory."""
        path = self._dir / check_collection_name(name)
        with self._lock:
            shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(path, ignore_errors=True)

    def upsert(self, name: str, points: Sequence[StoredPoint]) -> None:
        """Insert or replace points (durable once the WAL has them)."""
        import qdrant_edge as qe

        if not points:
            return
        batch = [
            qe.Point(
                id=point.point_id,
                vector={
                    DENSE: list(point.dense),
                    SPARSE: qe.SparseVector(list(point.sparse.indices), list(point.sparse.values)),
                },
                payload=dict(point.payload),
            )
            for point in points
        ]
        self._shard(name).update(qe.UpdateOperation.upsert_points(batch))

    def delete_revs(self, name: str, tenant: str, revs: Sequence[str]) -> None:
        """Delete the points of these revisions of `tenant`."""
        import qdrant_edge as qe

        if revs:
            flt = edge_filter(Scope(tenant=tenant, revs=tuple(revs)))
            self._shard(name).update(qe.UpdateOperation.delete_points_by_filter(flt))

    def query(self, name: str, request: StoreQuery) -> list[Hit]:
        """Dense, sparse or hybrid (fused in the engine) search."""
        import qdrant_edge as qe

        flt = edge_filter(request.scope)
        sparse_params = qe.SearchParams(
            idf=qe.IdfParams(corpus=edge_filter(request.scope.corpus()))
        )
        branches: list[tuple[Any, Any]] = []
        if request.dense is not None:
            branches.append((qe.Query.Nearest(list(request.dense), using=DENSE), None))
        if request.sparse is not None:
            vector = qe.SparseVector(list(request.sparse.indices), list(request.sparse.values))
            branches.append((qe.Query.Nearest(vector, using=SPARSE), sparse_params))
        if not branches:
            raise ValueError("a query needs a dense or a sparse vector")
        vectors = [DENSE] if request.with_dense else None
        if len(branches) == 1:
            query, params = branches[0]
            req = qe.QueryRequest(
                limit=request.limit, query=query, filter=flt, params=params, with_payload=True,
                with_vector=vectors,
            )  # fmt: skip
        else:
            fusion = request.fusion
            fuse: Any = (
                qe.Fusion.Dbsf()
                if fusion.method == "dbsf"
                else qe.Fusion.Rrf(k=fusion.k, weights=[fusion.dense_weight, fusion.sparse_weight])
            )
            prefetches = [
                qe.Prefetch(limit=fusion.prefetch, query=query, filter=flt, params=params)
                for query, params in branches
            ]
            req = qe.QueryRequest(
                limit=request.limit, query=fuse, prefetches=prefetches, with_payload=True,
                with_vector=vectors,
            )  # fmt: skip
        points = self._shard(name).query(req)
        return [Hit(str(p.id), float(p.score), p.payload or {}, dense_of(p.vector)) for p in points]

    def scroll(self, name: str, scope: Scope, limit: int) -> list[Hit]:
        """Up to `limit` points of the scope."""
        import qdrant_edge as qe

        request = qe.ScrollRequest(limit=limit, filter=edge_filter(scope), with_payload=True)
        records, _ = self._shard(name).scroll(request)
        return [Hit(str(r.id), 0.0, r.payload or {}) for r in records]

    def count(self, name: str, scope: Scope) -> int:
        """Exact count of the scope's points."""
        import qdrant_edge as qe

        return int(self._shard(name).count(qe.CountRequest(exact=True, filter=edge_filter(scope))))

    def close(self) -> None:
        """Flush and close every open shard."""
        with self._lock:
            shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            shard.flush()
            shard.close()
        if self._owner is not None:
            self._owner.close()  # releases the lock
            self._owner = None


def _take_ownership(data_dir: Path) -> Any:
    """Lock the data dir for this process; the lock dies with the process, even on kill -9."""
    handle = (data_dir / ".owner.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreInUseError(
            f"the embedded vector store at {data_dir} is in use by another process ({holder}). "
            "The embedded engine belongs to one process: run one gateway per data dir, or run "
            "several replicas against a Qdrant server (RAGDOCK_QDRANT_URL) and a PostgreSQL "
            "control plane (RAGDOCK_DATABASE_URL)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle
