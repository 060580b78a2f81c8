"""`Worker`: claims sync jobs from the control plane and runs them, one at a time per thread.

Any number of workers (gateway replicas, `ragdock worker` processes) share one control plane;
none needs to know of the others. Each loop turn queues the jobs that sources' schedules make
due, claims one job, and runs it while a heartbeat thread renews its lease. A worker told to
stop finishes its current batch and leaves the job to be resumed (by itself, or another
worker once the lease has passed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ragdock.controlplane import ControlPlane
from retrieval.service import Retriever
from retrieval.sources.jobs import JobQueue, JobRecord, LeaseLostError
from retrieval.sources.registry import SourceRegistry
from retrieval.sources.sync import Sync, SyncSettings

log = logging.getLogger(__name__)


class Worker:
    """Runs sync jobs.

    Args:
        retriever: the store documents go to.
        plane: the control plane (jobs, sources); its owner id is the lease holder's name.
        settings: confinement and limits of syncs.
        lease_s: a job's lease; the heartbeat renews it every third of it.
        per_tenant: most running jobs per tenant (over every worker).
        poll_s: how long an idle worker waits before looking for work again.
        observe: called with (outcome, count) as documents are recorded (metrics).
        on_job: called with each job's final state (metrics, logs).
    """

    def __init__(
        self,
        retriever: Retriever,
        plane: ControlPlane,
        settings: SyncSettings,
        *,
        lease_s: float = 30.0,
        per_tenant: int = 2,
        poll_s: float = 2.0,
        observe: Callable[[str, int], None] | None = None,
        on_job: Callable[[JobRecord, str], None] | None = None,
    ) -> None:
        self.retriever, self.settings = retriever, settings
        self.queue = JobQueue(plane, lease_s=lease_s, per_tenant=per_tenant)
        self.registry = SourceRegistry(plane)
        self.owner = plane.owner
        self.poll_s = poll_s
        self.observe, self.on_job = observe, on_job
        self.stopping = threading.Event()
        self._work = threading.Event()  # set by `wake`: a job was queued in this process

    def run_once(self) -> str | None:
        """Queue what is due, then claim and run one job; its final state (None: no job)."""
        self.queue.schedule_due()
        job = self.queue.claim(self.owner)
        if job is None:
            return None
        log.info(
            "job %s (%s of source %s) claimed, attempt %d",
            job.id, job.kind, job.source_name, job.attempts,
        )  # fmt: skip
        lost = threading.Event()
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(job, lost, done), name=f"lease-{job.id[:8]}",
            daemon=True,
        )  # fmt: skip
        beat.start()
        try:
            sync = Sync(
                self.retriever, self.registry, self.queue, self.settings, self.owner,
                stop=self.stopping, lost=lost, observe=self.observe,
            )  # fmt: skip
            state = sync.run(job)
        finally:
            done.set()
            beat.join()
        log.info("job %s ended: %s", job.id, state)
        if self.on_job is not None:
            self.on_job(job, state)
        return state

    def _heartbeat(self, job: JobRecord, lost: threading.Event, done: threading.Event) -> None:
        while not done.wait(self.queue.lease_s / 3):
            try:
                self.queue.renew(job.id, self.owner)
            except LeaseLostError:
                lost.set()
                return
            except Exception as exc:  # a control-plane hiccup: try again next beat
                log.warning("renewing the lease of job %s failed: %s", job.id, exc)

    def run_forever(self) -> None:
        """Work until `stop()`; errors of one turn are logged, never fatal."""
        while not self.stopping.is_set():
            try:
                state = self.run_once()
            except Exception as exc:
                log.warning("worker turn failed: %s", exc)
                state = None
            if state is None:
                self._work.wait(self.poll_s)
                self._work.clear()

    def wake(self) -> None:
        """Look for work now, not at the next poll (the gateway's API queued a job)."""
        self._work.set()

    def stop(self) -> None:
        self.stopping.set()
        self._work.set()

    def start_thread(self) -> threading.Thread:
        """`run_forever` on a daemon thread (the gateway's embedded worker)."""
        self._thread = threading.Thread(target=self.run_forever, name="ragdock-worker", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout_s: float) -> None:
        """Wait for the thread of `start_thread` to end (after `stop`)."""
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout_s)
