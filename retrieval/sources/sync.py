"""One sync: make a collection equal to its source, in batches that each commit their own
progress, so a worker killed at any step leaves a job the next worker resumes.

Per batch of items: look up what the last syncs recorded (`source_items`); an item whose
fingerprint is unchanged costs one lookup, one whose content hash is unchanged costs a read;
the rest are extracted and ingested (each document's swap is atomic for readers), and then ONE
control-plane transaction records the items (marked seen by this job), the errors and the
progress, and renews the lease. A crash between the ingest and that commit repeats the batch:
the re-ingest of an identical version is a no-op in the retriever, and the progress counts it
once, since counts and items commit together. After a full pass, the items this job did not
see are gone from the source: their documents are deleted, again one committed batch at a time.
A document another source (or a caller, by hand) put in the collection is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy import select, update

from ragdock.contracts.source_spec import FolderSpec, SqlSpec
from ragdock.controlplane.schema import source_items, sources
from retrieval.service import Retriever
from retrieval.sources.confine import Confinement
from retrieval.sources.files import ItemError
from retrieval.sources.folder import FolderReader
from retrieval.sources.items import SourceItem, SourceReader
from retrieval.sources.jobs import BatchRecord, JobQueue, JobRecord, LeaseLostError, Progress
from retrieval.sources.registry import SourceRecord, SourceRegistry, decode_cursor, encode_cursor
from retrieval.sources.sql import SqlReader, source_url
from retrieval.types import Document
from retrieval.untrusted import ExtractLimits

log = logging.getLogger(__name__)


@dataclass
class SyncSettings:
    """How syncs run. `batch_size` documents are ingested and committed together."""

    confinement: Confinement = field(default_factory=Confinement)
    max_document_bytes: int = 10 * 1024 * 1024
    batch_size: int = 32


class Stopped(Exception):
    """The job was cancelled, or its lease was lost, between two batches."""


def doc_id_of(source: SourceRecord, key: str) -> str:
    """A source's documents are named `<source>/<key>`: two sources (or a document posted by
    hand) in one collection never take each other's ids."""
    return f"{source.name}/{key}"


def open_reader(source: SourceRecord, settings: SyncSettings) -> SourceReader:
    """The source, opened for reading (its folder checked, its credentials read now).

    Raises:
        ConfinementError, SqlSourceError: the source may not or cannot be read.
    """
    metadata = {"source": source.name}
    spec = source.spec
    if isinstance(spec, FolderSpec):
        root = settings.confinement.folder(spec.path, source.tenant)
        return FolderReader(
            root, spec, max_bytes=settings.max_document_bytes,
            limits=ExtractLimits(max_chars=settings.max_document_bytes), metadata=metadata,
        )  # fmt: skip
    assert isinstance(spec, SqlSpec)
    return SqlReader(spec, source_url(spec, source.tenant, settings.confinement), metadata=metadata)


def _batches(items: Iterable[SourceItem], size: int) -> Iterator[list[SourceItem]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _later(a: object, b: object) -> object:
    if a is None:
        return b
    if b is None:
        return a
    try:
        return b if b > a else a  # type: ignore[operator]
    except TypeError:
        return b


class Sync:
    """Runs one claimed job to its end.

    Args:
        retriever: where documents go.
        registry, queue: the control plane's sources and jobs.
        settings: confinement and limits.
        owner: this worker's lease-holder id.
        stop: set when the worker shuts down (the job is left to be resumed by another).
        lost: set by the heartbeat when the lease was lost.
    """

    def __init__(
        self,
        retriever: Retriever,
        registry: SourceRegistry,
        queue: JobQueue,
        settings: SyncSettings,
        owner: str,
        *,
        stop: threading.Event | None = None,
        lost: threading.Event | None = None,
        observe: Any = None,
    ) -> None:
        self.retriever, self.registry, self.queue = retriever, registry, queue
        self.settings, self.owner = settings, owner
        self.stop = stop or threading.Event()
        self.lost = lost or threading.Event()
        self.observe = observe  # called with (outcome, count) as items are recorded

    def run(self, job: JobRecord) -> str:
        """The job's final state (or "stopped" when it was left for another worker)."""
        source = self.registry.get(job.source_id)
        if source is None:
            self.queue.finish(job, self.owner, "failed", error="the source was deleted")
            return "failed"
        try:
            return self._run(job, source)
        except Stopped:
            return "stopped"
        except LeaseLostError:
            log.warning("job %s: lease lost; another worker has it", job.id)
            return "stopped"
        except Exception as exc:  # the job fails; the worker goes on with the next
            message = _describe(exc)
            log.warning("job %s of source %s failed: %s", job.id, source.name, message)
            try:
                self.queue.finish(job, self.owner, "failed", error=message)
            except LeaseLostError:
                return "stopped"
            return "failed"

    def _run(self, job: JobRecord, source: SourceRecord) -> str:
        purge = job.kind == "purge"
        if purge:
            reader: SourceReader | None = None
        else:
            reader = open_reader(source, self.settings)
            self.retriever.create_collection(source.collection, tenant=source.tenant)
            self._adopt_generation(source)
        try:
            since = decode_cursor(job.cursor_from) if job.kind == "incremental" else None
            if reader is not None and not self._batches(job, source, reader, since):
                return "cancelled"
            if (purge or job.kind == "full") and not self._delete_unseen(job, source):
                return "cancelled"
        finally:
            if reader is not None:
                reader.close()
        final = self.queue.get(job.id)
        changes: dict[str, Any] = {}
        if not purge:
            changes = {"syncs": source.syncs + 1, "last_success_at": _now(self.queue)}
            if final is not None and final.progress.cursor_seen is not None:
                changes["cursor"] = final.progress.cursor_seen
        self.queue.finish(job, self.owner, "succeeded", source_changes=changes)
        return "succeeded"

    def _adopt_generation(self, source: SourceRecord) -> None:
        """A collection dropped and re-created since the last sync holds none of the source's
        documents: forget what was recorded, so this sync ingests everything again."""
        generation = self.retriever.catalog.generation(source.collection)
        if generation == source.generation:
            return
        with self.queue.plane.write() as conn:
            conn.execute(source_items.delete().where(source_items.c.source_id == source.id))
            conn.execute(
                update(sources).where(sources.c.id == source.id).values(generation=generation)
            )

    def _check(self) -> None:
        if self.stop.is_set() or self.lost.is_set():
            raise Stopped

    def _commit(self, job: JobRecord, batch: BatchRecord) -> bool:
        """Record the batch; returns False when the job was cancelled (and is now ended)."""
        cancel = self.queue.record(job, self.owner, batch)
        if self.observe is not None:
            progress = batch.progress
            for outcome in ("added", "updated", "unchanged", "deleted", "failed"):
                if getattr(progress, outcome):
                    self.observe(outcome, getattr(progress, outcome))
        if cancel:
            self.queue.finish(job, self.owner, "cancelled")
            return False
        return True

    def _batches(
        self, job: JobRecord, source: SourceRecord, reader: SourceReader, since: object
    ) -> bool:
        total = reader.count(since)
        first = True
        cursor = decode_cursor(job.progress.cursor_seen)
        for items in _batches(reader.items(since), self.settings.batch_size):
            self._check()
            if not first and self.queue.cancel_requested(job.id):  # before more work
                self.queue.finish(job, self.owner, "cancelled")
                return False
            batch = self._batch(job, source, items)
            if first:
                batch.progress.total, first = total, False
            for item in items:
                cursor = _later(cursor, item.updated_at)
            batch.progress.cursor_seen = encode_cursor(cursor)
            if not self._commit(job, batch):
                return False
        if first and total is not None:  # an empty source still reports its total
            return self._commit(job, BatchRecord(Progress(total=total), job_id=job.id))
        return True

    def _batch(self, job: JobRecord, source: SourceRecord, items: list[SourceItem]) -> BatchRecord:
        with self.queue.plane.read() as conn:
            rows = conn.execute(
                select(source_items).where(
                    source_items.c.source_id == source.id,
                    source_items.c.item_key.in_([i.key for i in items]),
                )
            ).all()  # fmt: skip
        known = {row.item_key: row for row in rows}
        batch = BatchRecord(job_id=job.id)
        progress = batch.progress
        pending: list[tuple[SourceItem, str, str, Document]] = []  # item, hash, outcome, doc
        for item in items:
            prior = known.get(item.key)
            if prior is not None and prior.seen_job == job.id:
                continue  # done (and counted) by this job before its worker died
            progress.seen += 1
            doc_id = prior.doc_id if prior is not None else doc_id_of(source, item.key)
            row = {
                "source_id": source.id, "item_key": item.key, "doc_id": doc_id,
                "seen_job": job.id,
            }  # fmt: skip
            if prior is not None and item.fingerprint and prior.fingerprint == item.fingerprint:
                progress.unchanged += 1
                batch.items.append({**row, "content_hash": prior.content_hash,
                                    "fingerprint": prior.fingerprint})  # fmt: skip
                continue
            try:
                content = item.load()
                progress.bytes += content.size
                if prior is not None and prior.content_hash == content.content_hash:
                    progress.unchanged += 1
                    batch.items.append({**row, "content_hash": content.content_hash,
                                        "fingerprint": item.fingerprint})  # fmt: skip
                    continue
                document = content.document(doc_id)
            except ItemError as exc:
                self._failed(batch, row, prior, item.key, str(exc))
                continue
            outcome = "updated" if prior is not None and prior.content_hash else "added"
            pending.append((item, content.content_hash, outcome, document))
        self._ingest(source, batch, pending, known)
        return batch

    def _ingest(
        self,
        source: SourceRecord,
        batch: BatchRecord,
        pending: list[tuple[SourceItem, str, str, Document]],
        known: dict[str, Any],
    ) -> None:
        if not pending:
            return
        groups = [pending]
        try:
            self.retriever.ingest(source.collection, source.tenant, [p[3] for p in pending])
        except KeyError:
            raise
        except Exception as exc:  # find the document at fault: one at a time
            log.info("batch ingest of %s failed (%s); retrying one by one", source.name, exc)
            groups = []
            for entry in pending:
                try:
                    self.retriever.ingest(source.collection, source.tenant, [entry[3]])
                    groups.append([entry])
                except KeyError:
                    raise
                except Exception as one:
                    row = {"source_id": source.id, "item_key": entry[0].key,
                           "doc_id": entry[3].doc_id, "seen_job": None}  # fmt: skip
                    self._failed(batch, row, known.get(entry[0].key), entry[0].key, _describe(one))
        for group in groups:
            for item, digest, outcome, document in group:
                setattr(batch.progress, outcome, getattr(batch.progress, outcome) + 1)
                batch.items.append({
                    "source_id": source.id, "item_key": item.key, "doc_id": document.doc_id,
                    "content_hash": digest, "fingerprint": item.fingerprint,
                    "seen_job": batch.job_id,
                })  # fmt: skip

    def _failed(
        self, batch: BatchRecord, row: dict[str, Any], prior: Any, key: str, why: str
    ) -> None:
        """A bad item is recorded and skipped. One synced before keeps its last good version
        (and is not deleted); a new one is remembered with no hash, so the next sync retries."""
        batch.progress.failed += 1
        batch.errors.append((key, why))
        job_id = batch.job_id
        if prior is not None:
            batch.items.append({**row, "content_hash": prior.content_hash,
                                "fingerprint": prior.fingerprint, "seen_job": job_id})  # fmt: skip
        else:
            batch.items.append({**row, "content_hash": "", "fingerprint": None,
                                "seen_job": job_id})  # fmt: skip

    def _delete_unseen(self, job: JobRecord, source: SourceRecord) -> bool:
        """Delete the documents of items this full pass did not see (all of them for a purge),
        except those another source of the tenant also lists."""
        size = self.settings.batch_size
        while True:
            self._check()
            with self.queue.plane.read() as conn:
                rows = conn.execute(
                    select(source_items.c.item_key, source_items.c.doc_id).where(
                        source_items.c.source_id == source.id,
                        (source_items.c.seen_job != job.id) | source_items.c.seen_job.is_(None),
                    ).limit(size)
                ).all()  # fmt: skip
                shared = _claimed_elsewhere(conn, source, [r.doc_id for r in rows])
            if not rows:
                return True
            batch = BatchRecord(job_id=job.id)
            for row in rows:
                if row.doc_id not in shared:
                    with contextlib.suppress(KeyError):  # a collection gone took it along
                        self.retriever.delete_document(source.collection, source.tenant, row.doc_id)
                batch.removed.append(row.item_key)
                batch.progress.deleted += 1
            if not self._commit(job, batch):
                return False


def _claimed_elsewhere(conn: Any, source: SourceRecord, doc_ids: list[str]) -> set[str]:
    """The doc ids another live source of the same tenant and collection also lists (a source
    deleted and created again over the same folder, before the old one's purge ran)."""
    if not doc_ids:
        return set()
    rows = conn.execute(
        select(source_items.c.doc_id)
        .join(sources, sources.c.id == source_items.c.source_id)
        .where(
            source_items.c.doc_id.in_(doc_ids), source_items.c.source_id != source.id,
            sources.c.tenant == source.tenant, sources.c.collection == source.collection,
            sources.c.deleted_at.is_(None),
        )
    ).all()  # fmt: skip
    return {r.doc_id for r in rows}


def _now(queue: JobQueue) -> float:
    with queue.plane.read() as conn:
        return queue.plane.now(conn)


def _describe(exc: BaseException) -> str:
    from ragdock.redact import mask_credentials

    return mask_credentials(f"{type(exc).__name__}: {exc}")[:500]
