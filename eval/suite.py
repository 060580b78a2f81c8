"""An eval suite: what to test, against what, on which frozen data (a commented YAML file).

Data files are referenced by path AND sha256. A file whose bytes changed since the suite was
written is refused before anything runs: a result measured on different data is not comparable
with the one it will be compared against. See `eval/suites/` for examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragdock.digest import sha256_file


class SuiteError(ValueError):
    """The suite or its data is invalid; the message names the field or file and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataRef(_Strict):
    """A data file pinned by content: `{path: ..., sha256: ...}`."""

    path: Path
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def verified(self) -> Path:
        """The file's path (relative to the working directory, as training configs are), after
        checking that its bytes still hash to `sha256`.

        Raises:
            SuiteError: the file is missing or its content changed.
        """
        path = self.path
        if not path.is_file():
            raise SuiteError(f"data file {path} does not exist")
        actual = sha256_file(path)
        if actual != self.sha256:
            raise SuiteError(
                f"{path} changed: its sha256 is {actual}, the suite pins {self.sha256}. A frozen "
                "eval set must not change; restore the file, or write a new suite for new data"
            )
        return path


TextMetric = Literal["exact_match", "token_f1", "rouge_l", "chrf"]
TEXT_METRIC_NAMES: tuple[TextMetric, ...] = ("exact_match", "token_f1", "rouge_l", "chrf")


class RetrievalTask(_Strict):
    kind: Literal["retrieval"]
    name: str = "retrieval"
    beir: Path = Field(description="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
    split: str = "test"
    max_queries: int | None = Field(None, ge=1, description="Score only the first N queries.")
    cache_dir: Path | None = Field(None, description="Embedding cache (outside the repo).")


class GenerationTask(_Strict):
    kind: Literal["generation"]
    name: str = "generation"
    data: DataRef = Field(
        description="JSONL: chat `messages` ending with the reference answer "
        "(assistant turn), or `prompt` + `reference`."
    )
    metrics: list[TextMetric] = Field(default_factory=lambda: list(TEXT_METRIC_NAMES))
    json_schema: DataRef | None = Field(None, description="Score JSON validity against it.")
    labels: list[str] | None = Field(None, description="Classification: accuracy and macro-F1.")
    max_examples: int | None = Field(None, ge=1)
    max_tokens: int = Field(64, ge=1, le=2048)


class GroundingTask(_Strict):
    kind: Literal["grounding"]
    name: str = "grounding"
    holdout: DataRef = Field(
        description="RAFT holdout JSONL (`ragdock train build-raft`): its "
        "questions, answers and articles."
    )
    corpus: DataRef = Field(
        description="The SQuAD-format file the articles come from; their "
        "paragraphs are ingested as the collection's documents."
    )
    collection: str = "eval-grounding"
    max_questions: int | None = Field(None, ge=2, description="Stratified sample (seeded).")
    top_k: int | None = Field(None, ge=1, le=50, description="Default: the gateway's rag_top_k.")
    correct_f1: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Token F1 that counts as correct "
        "(an answer containing a reference also counts).",
    )
    max_tokens: int = Field(64, ge=1, le=2048)
    min_answerability: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Sent as rag.min_answerability (default: the adapter's calibrated threshold).",
    )
    min_support: float | None = Field(
        None, ge=0, le=1, description="Sent as rag.min_support (default: the gateway's setting)."
    )


class ForgettingTask(_Strict):
    kind: Literal["forgetting"]
    name: str = "forgetting"
    text: DataRef = Field(description="JSONL of {id, text}: plain paragraphs for perplexity.")
    qa: DataRef = Field(description="JSONL of {id, question, answers}: short general questions.")
    max_tokens: int = Field(16, ge=1, le=256)


Task = Annotated[
    RetrievalTask | GenerationTask | GroundingTask | ForgettingTask, Field(discriminator="kind")
]


class BootstrapSettings(_Strict):
    resamples: int = Field(default=2000, ge=100)
    level: float = Field(default=0.95, gt=0.5, lt=1.0)


class Suite(_Strict):
    """The suite file, validated."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    gateway: str = Field("http://127.0.0.1:8000", description="RAGDOCK_GATEWAY_URL overrides.")
    candidate: str = Field(
        description="The adapter under test: NAME@VERSION, NAME@ALIAS or NAME@latest."
    )
    alias: str = Field("prod", description="'previous' is what this alias points at now.")
    base: str | None = Field(None, description="The base model's name; default: the gateway's.")
    holdout: DataRef | None = Field(
        None, description="Must equal the holdout recorded in the candidate's training manifest."
    )
    seed: int = 0
    concurrency: int = Field(4, ge=1, le=64)
    bootstrap: BootstrapSettings = Field(default_factory=lambda: BootstrapSettings())
    tasks: list[Task] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_task_names(self) -> Suite:
        names = [task.name for task in self.tasks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"task names must be unique; give each a `name:` ({duplicated})")
        return self


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file.

    Raises:
        SuiteError: unreadable YAML or an invalid field (the message names it).
    """
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SuiteError(f"cannot read suite {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite is a YAML mapping (name, candidate, tasks, ...)")
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SuiteError(f"{path}: {problems}") from exc
