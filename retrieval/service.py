"""`Retriever`: chunk, embed (dense + BM25) and store documents; search them per tenant.

Writes follow the swap protocol in `retrieval.freshness`, decided in the shared control plane, so
any number of `Retriever`s (gateway replicas) over one vector store and one control plane agree;
reads never block on writes.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ragdock.contracts.chunk_payload import ChunkPayload, read_chunk_payload
from ragdock.controlplane import ControlPlane, open_control_plane
from retrieval.catalog import Catalog, CollectionGoneError, DocRecord, Snapshot
from retrieval.chunking import ChunkingConfig, chunk_document, content_version, iso_utc
from retrieval.dense import Embedder
from retrieval.extract import extract_text
from retrieval.freshness import Snapshots
from retrieval.quotas import StorageQuota, check
from retrieval.ranking import FusionConfig, RecencyDecay, parse_utc
from retrieval.sparse import SparseEncoder
from retrieval.store.base import Hit, Scope, StoredPoint, StoreQuery, VectorStore
from retrieval.store.edge import check_collection_name
from retrieval.types import (
    Chunk,
    Document,
    DocumentInfo,
    DocumentPage,
    ScoredChunk,
    SearchFilter,
    SearchMode,
)

log = logging.getLogger(__name__)
_REV_NAMESPACE = uuid.UUID("0b6d2f8e-3c55-4e1a-8f0d-7a9c4b2e6d13")
# Chosen by measurement on SciFact: see `FusionConfig`'s docstring.
DEFAULT_FUSION = FusionConfig()


class Reranker(Protocol):
    """Reorders fused candidates (e.g. a cross-encoder); off unless one is given."""

    def rerank(self, query: str, chunks: Sequence[ScoredChunk]) -> list[ScoredChunk]:
        """Return the chunks rescored and sorted best first."""
        ...


@dataclass(frozen=True)
class IngestReport:
    """What one `ingest` call did."""

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    chunks: int = 0


def point_id(tenant: str, rev: str, chunk_id: str) -> str:
    """Point id: the chunk id made tenant- and revision-specific, so two tenants never overwrite
    each other and a new revision never overwrites points an older snapshot may still read."""
    return str(uuid.uuid5(_REV_NAMESPACE, f"{tenant}\x1f{rev}\x1f{chunk_id}"))


def _version(document: Document) -> str:
    if document.version:
        return document.version
    extra = repr(sorted(document.metadata.items()))
    stamp = iso_utc(document.updated_at) if document.updated_at else ""
    return content_version(
        Document(
            document.doc_id,
            document.text + extra + stamp,
            document.title,
            document.uri,
            None,
            None,
            document.content_type,
        )
    )


def _scored_at(hit: Hit) -> tuple[int, ScoredChunk]:
    """A document's chunk with its position (a document is read back in order)."""
    payload = read_chunk_payload(hit.payload, point_id=hit.point_id)
    return payload.index, _scored(hit, payload)


def _cosine(query: Sequence[float] | None, point: Sequence[float] | None) -> float | None:
    """Cosine similarity of a hit with the query: the absolute score a fused rank lacks (what
    the retrieval gate reads), from the same query (the store returns the hit's vector)."""
    if query is None or point is None or len(query) != len(point):
        return None
    dot = sum(a * b for a, b in zip(query, point, strict=True))
    norms = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in point))
    return dot / norms if norms else None


def _scored(
    hit: Hit, payload: ChunkPayload | None = None, *, similarity: float | None = None
) -> ScoredChunk:
    p = payload or read_chunk_payload(hit.payload, point_id=hit.point_id)
    return ScoredChunk(
        chunk_id=p.chunk_id,
        doc_id=p.doc_id,
        title=p.title,
        uri=p.uri,
        score=hit.score,
        text=p.text,
        updated_at=p.updated_at,
        heading_path=tuple(p.heading_path),
        metadata=dict(p.meta),
        similarity=similarity,
    )


class Retriever:
    """Hybrid retrieval over one vector store, its catalog in a shared control plane.

    Args:
        store: the Qdrant engine (`EdgeStore` or `QdrantClientStore`).
        embedder: dense encoder (its `count_tokens` sizes chunks).
        sparse: BM25 encoder.
        catalog_dir: where per-collection catalogs from before the control plane may lie (they
            are imported on first use); also holds the embedded control plane when `control`
            is not given.
        control: the control-plane store (shared by replicas); default: embedded SQLite at
            `catalog_dir/control.sqlite`, closed with the retriever.
        owns_control: close `control` with the retriever (default: only when opened here).
        chunking: chunk budget and overlap.
        fusion: default hybrid fusion.
        reranker: optional reranker applied to fused candidates.
        commit_chunks: chunks embedded and committed per step of an ingest (bigger batches
            embed faster; each step is atomic per document).
        grace_s: how long retired points stay after the commit that retired them.
        lease_s: how long a writer's staged revisions stay its own without a renewal.
        snapshot_ttl_s: how long a read snapshot is reused in this process.
        names_per_tenant: a tenant may use only the collections it may list (it created them,
            first or again, or has documents in them); any other name answers as one that does
            not exist (KeyError), so no tenant learns another's collection names (the gateway).
            Off, every tenant may use every collection (the library, its CLIs and evals).
        quota: the storage limits checked on create and ingest (default: none).
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse: SparseEncoder,
        catalog_dir: Path,
        *,
        control: ControlPlane | None = None,
        owns_control: bool | None = None,
        chunking: ChunkingConfig = ChunkingConfig(),
        fusion: FusionConfig = DEFAULT_FUSION,
        reranker: Reranker | None = None,
        commit_chunks: int = 512,
        grace_s: float = 30.0,
        lease_s: float = 60.0,
        snapshot_ttl_s: float = 0.2,
        names_per_tenant: bool = False,
        quota: StorageQuota = StorageQuota(),
    ) -> None:
        self.store = store
        self.quota = quota
        self.embedder = embedder
        self.sparse = sparse
        self.chunking = chunking
        self.fusion = fusion
        self.reranker = reranker
        self._catalog_dir = Path(catalog_dir)
        self._owns_control = control is None if owns_control is None else owns_control
        self.control = control or open_control_plane(None, self._catalog_dir)
        self.catalog = Catalog(self.control, lease_s=lease_s)
        self._commit_chunks = commit_chunks
        self.names_per_tenant = names_per_tenant
        self.grace_s = grace_s
        # A read must end well inside the grace: see `freshness`, point 4.
        self.snapshots = Snapshots(self.catalog, ttl_s=snapshot_ttl_s, read_budget_s=grace_s / 2)
        # Test hook: called with a step name during a swap, to simulate a crash there (raise a
        # BaseException that is not an Exception: a crash runs no cleanup).
        self.fault: Callable[[str], None] = lambda step: None

    # -- collections ---------------------------------------------------------------------
    def _legacy_catalog(self, name: str) -> Path:
        return self._catalog_dir / f"{check_collection_name(name)}.sqlite"

    def _generation(self, name: str) -> str:
        """The collection's generation; a store collection the catalog does not know yet (made
        before the control plane, or by a create that died half way) is registered."""
        generation = self.catalog.generation(name)
        if generation is not None:
            return generation
        if not self.store.collection_exists(name):
            raise KeyError(f"collection {name!r} does not exist")
        return self.catalog.ensure(name, legacy=self._legacy_catalog(name))

    def _tenant_generation(self, name: str, tenant: str) -> str:
        """`_generation`, for a tenant: a collection it may not see raises the same KeyError as
        one that does not exist (with `names_per_tenant`)."""
        generation = self._generation(name)
        if self.names_per_tenant and not self.catalog.visible(name, tenant):
            raise KeyError(f"collection {name!r} does not exist")
        return generation

    def _snapshot(self, name: str, snapshot: Snapshot | None) -> Snapshot:
        if snapshot is not None:
            return snapshot
        self._generation(name)  # raises KeyError when there is no such collection
        self.snapshots.forget(name)
        fresh = self.catalog.snapshot(name)
        if fresh is None:
            raise KeyError(f"collection {name!r} does not exist")
        return fresh

    def create_collection(self, name: str, *, tenant: str | None = None) -> None:
        """Create a collection (idempotent); `tenant` is recorded as its creator, or as one
        more of its members when another tenant created the name first.

        Raises:
            QuotaExceededError: a new collection would be over `quota` (nothing is created).
        """
        check_collection_name(name)
        if not self.store.collection_exists(name):
            self._check_create(tenant)
            # A catalog without its store collection belongs to one deleted outside ragdock:
            # the new collection must not inherit it.
            self.catalog.drop(name)
            self.store.create_collection(name, self.embedder.dim)
        self.catalog.ensure(name, legacy=self._legacy_catalog(name), created_by=tenant)
        if tenant is not None and not self.catalog.visible(name, tenant):
            self.catalog.join(name, tenant)
        self.snapshots.forget(name)

    def _check_create(self, tenant: str | None) -> None:
        # Counted before the store collection exists: its threads are the cost bounded here.
        # Replicas creating at the same instant may each pass the check once.
        quota = self.quota
        if quota.max_collections:
            held = len(self.store.list_collections())
            check("collections in this store", held, 1, quota.max_collections,
                  "RAGDOCK_MAX_COLLECTIONS")  # fmt: skip
        if tenant is not None and quota.tenant_max_collections:
            held = self.catalog.usage(tenant).collections
            check(f"collections for tenant {tenant}", held, 1, quota.tenant_max_collections,
                  "RAGDOCK_TENANT_MAX_COLLECTIONS")  # fmt: skip

    def list_collections(self, tenant: str | None = None) -> list[str]:
        """Collection names; with `tenant`, only those it created or has documents in."""
        names = self.store.list_collections()
        if tenant is None:
            return names
        for name in set(names) - set(self.catalog.names()):
            self._generation(name)  # made before the control plane: register it first
        return sorted(set(names) & set(self.catalog.names(tenant)))

    def delete_tenant_documents(self, name: str, tenant: str) -> int:
        """Remove every document of `tenant` from a collection, atomically for readers (the
        points go after the grace period); other tenants' documents stay.

        Returns:
            How many documents were removed.
        """
        generation = self._tenant_generation(name, tenant)
        try:
            gone = self.catalog.remove_tenant(name, generation, tenant)
        except CollectionGoneError as exc:
            raise KeyError(f"collection {name!r} was dropped") from exc
        finally:
            self.snapshots.forget(name)
        return len(gone)

    def drop_own_collection(self, name: str, tenant: str) -> bool:
        """Drop a collection whole (as `delete_collection`) when `tenant` created it and no
        other tenant uses it (see `Catalog.drop_if_sole`).

        Returns:
            Whether it was dropped (False: nothing changed).
        """
        if self.catalog.drop_if_sole(check_collection_name(name), tenant) is None:
            return False
        self.delete_collection(name)  # the catalog is gone already: this frees the store's
        return True

    def delete_collection(self, name: str) -> None:
        """Drop a collection with its catalog (the catalog first: from that transaction on, no
        replica sees anything of it, even before the store has deleted the points)."""
        self.catalog.drop(check_collection_name(name))
        self.snapshots.forget(name)
        self.store.delete_collection(name)
        for legacy in (self._legacy_catalog(name), self._legacy_catalog(name).with_suffix(
            ".sqlite.imported"
        )):  # fmt: skip
            legacy.unlink(missing_ok=True)

    # -- writes --------------------------------------------------------------------------
    def ingest(
        self,
        collection: str,
        tenant: str,
        documents: Iterable[Document],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Add or replace documents; each document's swap is atomic for readers.

        Args:
            collection: target collection (must exist).
            tenant: owner of the documents.
            documents: documents; an unchanged version is skipped.
            progress: called with the number of chunks written after each step.

        Returns:
            Counts of added, replaced and unchanged documents and of chunks written.

        Raises:
            KeyError: when the collection does not exist (or is dropped during the ingest).
            ValueError: for an empty tenant or an unsupported content type.
            LeaseLostError: the writer stalled past its lease and its work was collected.
            QuotaExceededError: the documents would take the tenant over `quota` (nothing is
                written).
        """
        if not tenant:
            raise ValueError("tenant is required")
        generation = self._tenant_generation(collection, tenant)
        if self.quota.counts_documents:
            documents = list(documents)
            self._check_ingest(generation, tenant, documents)
        self.collect(collection)
        totals = IngestReport()
        now = datetime.now(UTC)
        for group in self._groups(generation, tenant, documents, now):
            totals = self._swap(collection, generation, tenant, group, totals)
            if progress is not None:
                progress(totals.chunks)
        return totals

    def _check_ingest(self, generation: str, tenant: str, documents: list[Document]) -> None:
        sizes = {d.doc_id: len(d.text.encode()) for d in documents}  # the last one wins
        live = self.catalog.live_sizes(generation, tenant, list(sizes))
        held = self.catalog.usage(tenant)
        check(f"documents for tenant {tenant}", held.documents, len(set(sizes) - set(live)),
              self.quota.tenant_max_documents, "RAGDOCK_TENANT_MAX_DOCUMENTS")  # fmt: skip
        added = sum(sizes.values()) - sum(live.values())
        check(f"stored bytes for tenant {tenant}", held.text_bytes, added,
              self.quota.tenant_max_bytes, "RAGDOCK_TENANT_MAX_BYTES")  # fmt: skip

    def _groups(
        self, generation: str, tenant: str, documents: Iterable[Document], now: datetime
    ) -> Iterator[list[tuple[Document, str, list[Chunk]] | Document]]:
        """Documents chunked and grouped by about `commit_chunks` chunks; unchanged ones pass
        through bare, so they are counted without being written."""
        group: list[tuple[Document, str, list[Chunk]] | Document] = []
        size = 0
        for document in documents:
            version = _version(document)
            live = self.catalog.live(generation, tenant, document.doc_id)
            if live is not None and live.version == version:
                group.append(document)
                continue
            text, markdown = extract_text(document.text, document.content_type)
            chunks = chunk_document(
                document,
                text,
                self.embedder.count_tokens,
                version=version,
                now=now,
                config=self.chunking,
                markdown=markdown,
            )
            group.append((document, version, chunks))
            size += len(chunks)
            if size >= self._commit_chunks:
                yield group
                group, size = [], 0
        if group:
            yield group

    def _swap(
        self,
        name: str,
        generation: str,
        tenant: str,
        group: list[tuple[Document, str, list[Chunk]] | Document],
        totals: IngestReport,
    ) -> IngestReport:
        entries: dict[str, tuple[Document, str, list[Chunk]]] = {}
        unchanged = 0
        for item in group:
            if isinstance(item, Document):
                unchanged += 1
            else:
                entries[item[0].doc_id] = item  # a repeated doc id: the last one wins
        revs, seq = self.catalog.stage(name, generation, tenant, list(entries))
        try:
            self.fault("staged")
            chunks = [(doc_id, c) for doc_id, entry in entries.items() for c in entry[2]]
            self._write(name, generation, seq, tenant, [(revs[d], c) for d, c in chunks])
            self.fault("written")
            records = [
                DocRecord(
                    tenant,
                    doc_id,
                    version,
                    revs[doc_id],
                    doc.title,
                    doc.uri,
                    chunk_list[0].updated_at if chunk_list else iso_utc(datetime.now(UTC)),
                    len(chunk_list),
                    len(doc.text.encode()),
                )
                for doc_id, (doc, version, chunk_list) in entries.items()
            ]
            retired = self.catalog.commit(name, generation, records)
        except CollectionGoneError as exc:
            raise KeyError(f"collection {name!r} was dropped during the ingest") from exc
        except Exception:
            # A failure we live through: hand the staged revisions to the collector now
            # instead of after the lease (a crash, which runs nothing, waits for the lease).
            self.catalog.abandon(generation, list(revs.values()))
            raise
        finally:
            self.snapshots.forget(name)
        self.fault("committed")
        replaced = len({p.doc_id for p in retired})
        return IngestReport(
            added=totals.added + len(entries) - replaced,
            replaced=totals.replaced + replaced,
            unchanged=totals.unchanged + unchanged,
            chunks=totals.chunks + len(chunks),
        )

    def _write(
        self, name: str, generation: str, seq: int, tenant: str, chunks: list[tuple[str, Chunk]]
    ) -> None:
        if not chunks:
            return
        texts = [chunk.index_text for _, chunk in chunks]
        dense = self.embedder.embed_documents(texts)
        points = [
            StoredPoint(
                point_id=point_id(tenant, rev, chunk.chunk_id),
                dense=dense[i].tolist(),
                sparse=self.sparse.embed_document(texts[i]),
                payload=_payload(tenant, rev, generation, seq, chunk),
            )
            for i, (rev, chunk) in enumerate(chunks)
        ]
        revs = sorted({rev for rev, _ in chunks})
        for start in range(0, len(points), 256):
            # The lease is checked (and extended) right before each write, so a writer that
            # stalled past it stops before its points could outlive the collector's delete.
            self.catalog.renew(generation, revs)
            self.store.upsert(name, points[start : start + 256])

    def collect(self, collection: str) -> int:
        """Delete the points of revisions retired more than the grace period ago (and of dead
        writers' expired leases, one grace after they expire). Any replica may run it; the
        deletes are idempotent. A store that fails leaves the rows for the next pass.

        Returns:
            How many revisions were collected.
        """
        generation = self.catalog.generation(collection)
        if generation is None:
            return 0
        due = self.catalog.due(generation, self.grace_s)
        if not due:
            return 0
        try:
            for tenant in {p.tenant for p in due}:
                self.store.delete_revs(
                    collection, tenant, [p.rev for p in due if p.tenant == tenant]
                )
        except Exception:
            log.warning("could not delete retired points in %r; left for the next pass", collection)
            return 0
        self.catalog.clear(generation, [p.rev for p in due])
        return len(due)

    def collect_all(self) -> int:
        """`collect` over every collection (the gateway runs this periodically)."""
        return sum(self.collect(name) for name in self.catalog.names())

    def delete_document(self, collection: str, tenant: str, doc_id: str) -> bool:
        """Remove a document atomically for readers (its points go after the grace period).

        Returns:
            True when the document existed.
        """
        generation = self._tenant_generation(collection, tenant)
        try:
            retired = self.catalog.remove(collection, generation, tenant, doc_id)
        except CollectionGoneError as exc:
            raise KeyError(f"collection {collection!r} was dropped") from exc
        finally:
            self.snapshots.forget(collection)
        return retired is not None

    # -- reads ---------------------------------------------------------------------------
    def list_documents(
        self, collection: str, tenant: str, *, limit: int = 50, after: str | None = None
    ) -> DocumentPage:
        """A page of the tenant's live documents ordered by doc id.

        Args:
            collection: the collection.
            tenant: whose documents.
            limit: page size.
            after: the `next_after` of the previous page.

        Returns:
            The page; `next_after` is None on the last page.
        """
        generation = self._tenant_generation(collection, tenant)
        records = self.catalog.page(generation, tenant, limit + 1, after)
        docs = [r.info() for r in records[:limit]]
        return DocumentPage(docs, docs[-1].doc_id if len(records) > limit else None)

    def get_document(
        self, collection: str, tenant: str, doc_id: str
    ) -> tuple[DocumentInfo, list[ScoredChunk]] | None:
        """A live document and its chunks in position order (None when absent)."""
        generation = self._tenant_generation(collection, tenant)

        def read() -> tuple[DocumentInfo, list[ScoredChunk]] | None:
            # The live record names its revision, which committed whole: read its points
            # directly. A snapshot could be older than the record (cached, or taken first) and
            # hide the revision; the budget keeps the points there for the read.
            record = self.catalog.live(generation, tenant, doc_id)
            if record is None:
                return None
            scope = Scope(tenant=tenant, generation=generation, revs=(record.rev,))
            hits = self.store.scroll(collection, scope, max(record.chunk_count, 1))
            chunks = sorted((_scored_at(h) for h in hits), key=lambda pair: pair[0])
            return record.info(), [chunk for _, chunk in chunks]

        return self.snapshots.within_budget(collection, read)

    def search(
        self,
        collection: str,
        tenant: str,
        query: str,
        *,
        top_k: int = 5,
        mode: SearchMode = SearchMode.HYBRID,
        filter: SearchFilter | None = None,
        min_score: float | None = None,
        recency: RecencyDecay | None = None,
        fusion: FusionConfig | None = None,
    ) -> list[ScoredChunk]:
        """Search a tenant's chunks.

        Args:
            collection: the collection.
            tenant: whose chunks (always applied).
            query: the question.
            top_k: results wanted.
            mode: hybrid (RRF/DBSF in Qdrant), dense or sparse.
            filter: metadata, doc id and date filters.
            min_score: drop results scoring below this (after decay and reranking).
            recency: optional recency decay on the candidates.
            fusion: override of the default fusion for this call.

        Returns:
            Scored chunks, best first.

        Raises:
            KeyError: when the collection does not exist.
        """
        if not tenant:
            raise ValueError("tenant is required")
        if self.names_per_tenant:  # before any work, as for a name that does not exist
            self._tenant_generation(collection, tenant)
        mode = SearchMode(mode)
        # Encode before taking a snapshot: the gate should be held for the query only. The query
        # is embedded in every mode: each hit's cosine with it is the absolute score that a
        # fused (rank-based) or BM25 score is not.
        embedded = self.embedder.embed_query(query).tolist()
        dense = embedded if mode is not SearchMode.SPARSE else None
        sparse = self.sparse.embed_query(query) if mode is not SearchMode.DENSE else None
        if sparse is not None and not sparse.indices and dense is None:
            return []
        if sparse is not None and not sparse.indices:
            sparse = None  # a query of stopwords only: hybrid degrades to dense
        wide = recency is not None or self.reranker is not None
        limit = max(top_k * 4, top_k) if wide else top_k
        flt = filter or SearchFilter()

        def read(snapshot: Snapshot | None) -> list[ScoredChunk]:
            scope = _visible(
                self._snapshot(collection, snapshot),
                tenant,
                doc_ids=flt.doc_ids,
                metadata=flt.metadata,
                updated_from=iso_utc(flt.updated_from) if flt.updated_from else None,
                updated_before=iso_utc(flt.updated_before) if flt.updated_before else None,
            )
            request = StoreQuery(
                scope=scope, limit=limit, dense=dense, sparse=sparse,
                fusion=fusion or self.fusion, with_dense=True,
            )  # fmt: skip
            hits = self.store.query(collection, request)
            return [_scored(hit, similarity=_cosine(embedded, hit.dense)) for hit in hits]

        chunks = self.snapshots.read(collection, read)
        if recency is not None:
            now = datetime.now(UTC)
            chunks = sorted(
                (
                    _rescore(c, c.score * recency.factor(parse_utc(c.updated_at), now))
                    for c in chunks
                ),
                key=lambda c: -c.score,
            )
        if self.reranker is not None:
            chunks = self.reranker.rerank(query, chunks)
        if min_score is not None:
            chunks = [c for c in chunks if c.score >= min_score]
        return chunks[:top_k]

    def close(self) -> None:
        """Close the store (and the control plane when the retriever opened it)."""
        self.store.close()
        if self._owns_control:
            self.control.close()


def _rescore(chunk: ScoredChunk, score: float) -> ScoredChunk:
    from dataclasses import replace

    return replace(chunk, score=score)


def _visible(snapshot: Snapshot, tenant: str, **narrowing: Any) -> Scope:
    """The tenant's points a read with this snapshot may see (see `freshness`, point 2)."""
    return Scope(
        tenant=tenant,
        hidden_revs=snapshot.hidden,
        generation=snapshot.generation,
        max_seq=snapshot.watermark,
        **narrowing,
    )


def _payload(tenant: str, rev: str, generation: str, seq: int, chunk: Chunk) -> dict[str, Any]:
    return ChunkPayload(
        tenant_id=tenant,
        doc_id=chunk.doc_id,
        rev=rev,
        gen=generation,
        seq=seq,
        chunk_id=chunk.chunk_id,
        version=chunk.version,
        index=chunk.index,
        title=chunk.title,
        heading_path=list(chunk.heading_path),
        uri=chunk.uri,
        updated_at=chunk.updated_at,
        text=chunk.text,
        meta=dict(chunk.metadata),
    ).to_payload()
