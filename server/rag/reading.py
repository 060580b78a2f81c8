"""The grounding reader in the gateway: loaded once, run on a turn's sources off the event loop
while the engine prefills, and its readings turned into the policy's plan.

The reader computes on a single worker thread of its own: its forward passes are CPU-bound
torch work that must not hold the event loop, nor stack up behind the embedder and the store in
the shared thread pool. One worker is deliberate: two forwards at once on a 2-core machine each
take twice as long, and the engine is computing on the same cores.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import ReaderNotFoundError
from adapters.reader_registry import DEFAULT_READER, ReaderRegistry
from grounding.policy import AnswerMode, DecisionModel, Evidence, Plan, SourceReaderModel, plan
from server.metrics import GatewayMetrics
from server.rag.protocol import ReaderVerdict, Source

log = logging.getLogger(__name__)

# Without a fitted decision the reader's own choice stands: answer when some source's span beats
# its no-answer score (margin > 0), i.e. probability 0.5 of a logistic over the margin alone.
UNCALIBRATED = DecisionModel(("reader_margin",), (1.0,), 0.0, 0.5)
SHIPPED_READER = Path(__file__).resolve().parents[2] / "adapters" / "demo" / "reader"
# What `auto` looks for in the registry before it falls back to the shipped directory.
PROMOTED_ALIAS = "prod"
# `NAME@ALIAS` or `NAME@VERSION`: the names and labels `adapters.names` allows.
_REGISTRY_REF = re.compile(r"([a-z0-9][a-z0-9_-]{0,62})@([A-Za-z0-9][A-Za-z0-9_.-]{0,62})")


def reader_directory(setting: str, registry: ReaderRegistry | None = None) -> Path | None:
    """The reader directory a `reader` setting names (None: no reader).

    Args:
        setting: `none`; `auto` (the registry's `reader@prod` when it has one, else the shipped
            reader); `NAME@ALIAS` or `NAME@VERSION` in the registry; or a reader directory.
            A directory that exists wins over the registry form (a path may hold an `@`).
        registry: the reader registry; without one `auto` means the shipped reader.

    Raises:
        FileNotFoundError: a path that is not a reader directory.
        ReaderNotFoundError: a `NAME@SELECTOR` the registry does not hold (or no registry).
    """
    if setting == "none":
        return None
    if setting == "auto":
        promoted = _promoted(registry, DEFAULT_READER) if registry is not None else None
        if promoted is not None:
            return promoted
        return SHIPPED_READER if (SHIPPED_READER / "manifest.json").is_file() else None
    path = Path(setting).expanduser()
    ref = _REGISTRY_REF.fullmatch(setting)
    if ref is not None and not path.exists():
        if registry is None:
            raise ReaderNotFoundError(
                f"RAGDOCK_READER={setting}: no reader registry to look it up in", param="reader"
            )
        version = registry.resolve(ref[1], ref[2])
        log.debug("reader %s is %s", setting, version.ref)  # looked up every reload interval
        return version.path
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"RAGDOCK_READER={setting}: no reader manifest.json there")
    return path


def load_reader_model(directory: Path, *, threads: int) -> SourceReaderModel:
    """The trained reader in `directory`, loaded on the installed base (seconds of CPU)."""
    from grounding.reader.reader import Reader

    return Reader.load(directory, threads=threads)


def _promoted(registry: ReaderRegistry, name: str) -> Path | None:
    try:
        version = registry.resolve(name, PROMOTED_ALIAS)
    except ReaderNotFoundError:
        return None
    log.debug("reader auto is %s (%s@%s)", version.ref, name, PROMOTED_ALIAS)
    return version.path


@dataclass(frozen=True)
class Reading:
    """A turn's readings and the plan made from them."""

    evidence: list[Evidence]
    plan: Plan
    calibrated: bool
    seconds: float

    def verdict(self, sources: list[Source]) -> ReaderVerdict:
        best = self.plan.evidence
        source = sources[best.source - 1] if best is not None else None
        return ReaderVerdict(
            span=best.text if best else "",
            source=best.source if best else None,
            chunk_id=source.chunk_id if source else None,
            start=best.start if best else None,
            end=best.end if best else None,
            span_score=best.span_score if best else None,
            null_score=best.null_score if best else None,
            margin=best.margin if best else None,
            probability=self.plan.probability,
            threshold=self.plan.threshold,
            calibrated=self.calibrated,
        )


@dataclass(frozen=True)
class LoadedReader:
    """One loaded reader and its decision, swapped as a whole (a read sees one or the other)."""

    model: SourceReaderModel
    decision: DecisionModel
    calibrated: bool
    directory: Path | None

    @classmethod
    def of(cls, model: SourceReaderModel, directory: Path | None = None) -> LoadedReader:
        fitted = model.decision_model()
        return cls(model, fitted or UNCALIBRATED, fitted is not None, directory)


class SourceReader:
    """Reads sources with the loaded reader and plans the reply.

    Args:
        reader: the loaded reader.
        metrics: where reading time is observed.
        directory: where it was loaded from (what a reload compares against).
    """

    def __init__(
        self, reader: SourceReaderModel, metrics: GatewayMetrics, directory: Path | None = None
    ) -> None:
        self.loaded = LoadedReader.of(reader, directory)
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reader")

    @property
    def reader(self) -> SourceReaderModel:
        return self.loaded.model

    @property
    def calibrated(self) -> bool:
        return self.loaded.calibrated

    @property
    def directory(self) -> Path | None:
        return self.loaded.directory

    def swap(self, reader: SourceReaderModel, directory: Path) -> None:
        """Serve `reader` from the next read on (one attribute store: a read in flight keeps
        the reader it started with)."""
        self.loaded = LoadedReader.of(reader, directory)

    @classmethod
    def load(cls, directory: Path, metrics: GatewayMetrics, *, threads: int) -> SourceReader:
        """Load a reader directory (seconds: the encoder is rebuilt and its weights checked)."""
        loaded = cls(load_reader_model(directory, threads=threads), metrics, directory)
        log.info(
            "reader loaded from %s (%s decision)",
            directory,
            "calibrated" if loaded.calibrated else "uncalibrated: margin > 0",
        )
        return loaded

    def start(
        self,
        question: str,
        sources: list[Source],
        *,
        mode: AnswerMode,
        top_similarity: float | None,
        threshold: float | None,
    ) -> asyncio.Future[Reading]:
        """Begin reading on the reader's thread; await the future for the plan."""
        texts = [s.text for s in sources]
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(
            self._pool, self._read, question, texts, mode, top_similarity, threshold
        )

    def _read(
        self,
        question: str,
        texts: list[str],
        mode: AnswerMode,
        top_similarity: float | None,
        threshold: float | None,
    ) -> Reading:
        from grounding.answerability import question_coverage

        started = time.perf_counter()
        loaded = self.loaded  # once: a swap mid-read does not mix two readers
        evidence = loaded.model.evidence(question, texts)
        decided = plan(
            mode,
            evidence,
            loaded.decision,
            top_similarity=top_similarity,
            question_coverage=question_coverage(question, texts),
            threshold=threshold,
        )
        calibrated = loaded.calibrated
        seconds = time.perf_counter() - started
        self._metrics.reader_latency.observe(seconds)
        return Reading(evidence, decided, calibrated, seconds)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
