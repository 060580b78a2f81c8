"""`ragdock worker`: run sync jobs without serving HTTP.

It opens the same control plane and vector store as the gateway (same settings), schedules
the sources that are due and claims jobs under leases, so any number of workers and gateway
replicas share the queue. The embedded vector store belongs to one process: next to a gateway
that uses it, a worker is refused (that gateway runs the jobs itself); with a Qdrant server
(`RAGDOCK_QDRANT_URL`) and PostgreSQL, run as many workers as you like.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from server.app import open_control, open_retrieval, sync_worker
from server.cli import ConfigOption, _load, _refuse_a_second_owner, console
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)


def worker(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option(help="Run the jobs that are queued now, then exit.")
    ] = False,
) -> None:
    """Run sync jobs (sources' schedules included) until SIGTERM or Ctrl-C."""
    settings = _load(config)
    _refuse_a_second_owner(settings)
    control = open_control(settings)
    retriever = open_retrieval(settings, control)
    worker = sync_worker(settings, retriever, control, GatewayMetrics())
    if worker is None or retriever is None:
        console.print("[red]retrieval is not installed here (pip install ragdock[retrieval])[/]")
        raise typer.Exit(1)

    def _stop(signum: int, frame: FrameType | None) -> None:
        console.print("stopping after the current batch (the job resumes later)")
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    console.print(f"worker {control.owner} on {control.describe()}")
    try:
        if once:
            while worker.run_once() is not None and not worker.stopping.is_set():
                pass
        else:
            worker.run_forever()
    finally:
        retriever.close()
        control.close()
