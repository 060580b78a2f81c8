"""`Reader`: a trained reader directory loaded for use, reading (question, chunks) in one batch.

Pure torch, no HTTP: the gateway calls `read` from a thread pool. Thread safety: the model is
only run under `torch.inference_mode()` in eval mode (no state is written during a forward), and
tokenization, which mutates the Rust tokenizer's truncation settings and fails with "Already
borrowed" when two threads do it at once, is serialised by a lock (it takes well under a
millisecond per chunk against tens of milliseconds of forward).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from grounding.policy import DecisionModel, Evidence
from grounding.reader.model import (
    base_model_dir,
    build_model,
    check_base,
    load_tokenizer,
    load_trained_state,
    merged_for_inference,
)
from grounding.reader.predict import SpanReading, readings, window_choices
from grounding.reader.views import MAX_ROWS, View, reading_views
from grounding.reader.windows import QuestionPair, WindowSettings, make_windows
from ragdock.contracts.reader import ReaderManifest, read_reader_manifest
from ragdock.digest import sha256_file


class ReaderLoadError(RuntimeError):
    """The reader directory cannot be used (weights changed, base differs)."""


class Reader:
    """A loaded reader.

    Args:
        model: the merged model in eval mode.
        tokenizer: the base's fast tokenizer.
        manifest: the reader's manifest (windowing and decoding settings).
        max_batch: windows per forward (a request's chunks are read in one forward up to this).
        max_table_rows: a chunk whose tables hold more rows is read whole, not row by row.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        manifest: ReaderManifest,
        *,
        max_batch: int = 64,
        max_table_rows: int = MAX_ROWS,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.max_batch = max_batch
        self.max_table_rows = max_table_rows
        decoding = manifest.decoding
        self.settings = WindowSettings(
            decoding.max_seq_len, decoding.stride, decoding.max_question_tokens
        )
        self._tokenize_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        threads: int | None = None,
        device: str = "cpu",
        max_batch: int = 64,
        base_dir: Path | None = None,
    ) -> Reader:
        """Load a trained reader directory on the installed base.

        Args:
            directory: holds `manifest.json` and the weights it names.
            threads: torch intra-op threads (process-wide: torch has one pool); None leaves it.
            device: where to compute.
            max_batch: windows per forward.
            base_dir: the base checkpoint (default: the installed package's).

        Returns:
            The reader, its LoRA merged into the base weights.

        Raises:
            ContractError: the manifest is missing or invalid.
            ReaderLoadError: the weights file does not match the manifest.
            BaseMismatchError: the installed base is not the one trained on.
        """
        manifest = read_reader_manifest(directory)
        weights_path = directory / manifest.weights.file
        if sha256_file(weights_path) != manifest.weights.sha256:
            raise ReaderLoadError(
                f"{weights_path} does not match the sha256 in {directory}/manifest.json; "
                "the directory was modified: copy it again from the training output"
            )
        if threads:
            torch.set_num_threads(threads)
        base = base_dir or base_model_dir()
        check_base(manifest.base, base)
        model = build_model(base, method=manifest.method, lora=manifest.lora, init_std=0.02)
        load_trained_state(
            model, load_file(str(weights_path)), from_base=manifest.weights.from_base
        )
        merged = merged_for_inference(model).to(device)
        return cls(merged, load_tokenizer(base), manifest, max_batch=max_batch)

    def read(self, question: str, chunks: Sequence[str]) -> list[SpanReading]:
        """Read each chunk for the question.

        Args:
            question: the user's question.
            chunks: the chunk texts. A chunk longer than one window is read as several windows,
                and a chunk holding a markdown table as its prose and one view per row
                (`views.reading_views`); the window or view with the largest margin speaks for
                the chunk.

        Returns:
            One reading per chunk, in order: span text (the chunk's own characters), its
            characters in the chunk, span score, null score and margin.
        """
        if not chunks:
            return []
        views = [reading_views(text, max_rows=self.max_table_rows) for text in chunks]
        flat = [view for chunk_views in views for view in chunk_views]
        pairs = [QuestionPair(question, view.text) for view in flat]
        with self._tokenize_lock:
            windows = make_windows(self.tokenizer, pairs, self.settings)
        choices = window_choices(
            self.model,
            windows,
            pad_id=self.tokenizer.pad_token_id,
            batch_size=self.max_batch,
            max_answer_tokens=self.manifest.decoding.max_answer_tokens,
        )
        read = iter(zip(flat, readings([v.text for v in flat], windows, choices), strict=True))
        return [
            chunk_reading(text, [next(read) for _ in chunk_views])
            for text, chunk_views in zip(chunks, views, strict=True)
        ]

    def evidence(self, question: str, chunks: Sequence[str]) -> list[Evidence]:
        """`read`, as the policy's evidence: one per chunk, numbered from 1 like the sources."""
        return [
            Evidence(n, r.text, r.start, r.end, r.span_score, r.null_score)
            for n, r in enumerate(self.read(question, chunks), start=1)
        ]

    def decision_model(self) -> DecisionModel | None:
        """The calibrated decision stored in the manifest (None: never calibrated)."""
        decision = self.manifest.decision
        if decision is None:
            return None
        return DecisionModel(
            tuple(decision.features), tuple(decision.weights), decision.bias, decision.threshold
        )


def chunk_reading(chunk: str, read: Sequence[tuple[View, SpanReading]]) -> SpanReading:
    """The reading of a chunk from its views' readings: the view with the largest margin whose
    span maps back to the chunk speaks for it (its span as the chunk's characters); when no
    view's span does, the largest margin with no span."""
    mapped = []
    for view, reading in read:
        span = (
            view.chunk_span(reading.start, reading.end)
            if reading.start is not None and reading.end is not None
            else None
        )
        if span is not None and chunk[span[0] : span[1]].strip():
            mapped.append((reading, span))
    if not mapped:
        best = max((r for _, r in read), key=lambda r: r.margin)
        return SpanReading("", None, None, best.span_score, best.null_score, best.margin)
    reading, (start, end) = max(mapped, key=lambda pair: pair[0].margin)
    return SpanReading(
        chunk[start:end], start, end, reading.span_score, reading.null_score, reading.margin
    )
