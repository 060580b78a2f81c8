"""A reader promoted in the registry reaches every gateway replica without a restart.

Each replica looks up what its `RAGDOCK_READER` setting names (`auto` is the registry's
`reader@prod`, `NAME@ALIAS` an alias) every `reader_reload_s` seconds in the shared control
plane. When that is another directory than the one it serves, it loads the new reader on a
thread of its own (seconds of CPU) while the old one keeps serving, then swaps them between two
reads. A reader that fails to load is logged and counted, the old one stays, and the same
directory is not tried again until the setting names another one (a rollback, a new promotion).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from adapters.reader_registry import ReaderRegistry
from grounding.policy import SourceReaderModel
from server.metrics import GatewayMetrics
from server.rag.reading import SourceReader, reader_directory

log = logging.getLogger(__name__)


class ReaderWatcher:
    """Keeps a gateway's reader what its setting resolves to.

    Args:
        setting: the `reader` setting (`auto`, `NAME@ALIAS`, ...).
        registry: the reader registry the setting resolves in.
        reader: the gateway's loaded reader, swapped in place.
        load: loads a reader directory (the real one: `reading.load_reader_model`).
        metrics: where reloads are counted.
    """

    def __init__(
        self,
        setting: str,
        registry: ReaderRegistry,
        reader: SourceReader,
        load: Callable[[Path], SourceReaderModel],
        metrics: GatewayMetrics,
    ) -> None:
        self._setting = setting
        self._registry = registry
        self._reader = reader
        self._load = load
        self._metrics = metrics
        self._failed: Path | None = None

    def check(self) -> Path | None:
        """Load and swap in the reader the setting names now, if it is another one.

        Returns:
            The directory swapped in (None: nothing changed, or the new one failed to load).
        """
        wanted = reader_directory(self._setting, self._registry)
        if wanted is None or wanted in (self._reader.directory, self._failed):
            return None
        try:
            model = self._load(wanted)
        except Exception:  # any load failure keeps the reader that works
            log.exception("reader %s: %s did not load; still serving %s",
                          self._setting, wanted, self._reader.directory)  # fmt: skip
            self._failed = wanted
            self._metrics.reader_reloads.labels(outcome="failed").inc()
            return None
        self._reader.swap(model, wanted)
        self._failed = None
        self._metrics.reader_reloads.labels(outcome="loaded").inc()
        log.info("reader %s is now %s", self._setting, wanted)
        return wanted

    async def run_forever(self, interval_s: float) -> None:
        """`check` every `interval_s` seconds off the event loop, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # a control plane outage: try again next time
                log.exception("reader %s: looking up the registry failed", self._setting)
