"""From the config's data section to tokenized train/validation sets and their epoch batches."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragdock.contracts.adapter_manifest import DataFile
from ragdock.digest import sha256_file
from training.batching import Batch, pack_rows, packed_batch, pad_batch
from training.config import DataSettings
from training.data import Example, read_examples
from training.holdout import LeakageReport, check_leakage, drop_or_refuse_duplicates
from training.render import Tokenized, TokenizeReport, tokenize_all


@dataclass
class PreparedData:
    """Everything the loop needs from the data, plus what the manifest records about it."""

    train: list[Tokenized]
    validation: list[Tokenized]
    files: dict[str, DataFile] = field(default_factory=dict)
    duplicates_dropped: int = 0
    leakage: LeakageReport = field(default_factory=LeakageReport)
    train_report: TokenizeReport = field(default_factory=TokenizeReport)
    validation_report: TokenizeReport = field(default_factory=TokenizeReport)


def _file_info(path: Path, count: int) -> DataFile:
    return DataFile(path=str(path), sha256=sha256_file(path), examples=count)


def split_validation(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A deterministic random split: the same seed and data give the same validation set."""
    if fraction <= 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    size = max(1, round(len(examples) * fraction))
    held = set(order[:size])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def prepare_data(
    settings: DataSettings, tokenizer: Any, *, seed: int, stop_ids: set[int]
) -> PreparedData:
    """Read, validate, deduplicate, check against the holdout, split and tokenize.

    Raises:
        DataError: invalid records, duplicates (policy fail), holdout leakage, too-long examples
            (policy fail), or an empty training set after filtering.
    """
    train_examples = read_examples(settings.train)
    files = {"train": _file_info(settings.train, len(train_examples))}
    train_examples, dropped = drop_or_refuse_duplicates(train_examples, settings.duplicates)
    if settings.validation is not None:
        validation_examples = read_examples(settings.validation)
        files["validation"] = _file_info(settings.validation, len(validation_examples))
    else:
        train_examples, validation_examples = split_validation(
            train_examples, settings.validation_fraction, seed
        )
    leakage = LeakageReport()
    if settings.holdout is not None:
        holdout = read_examples(settings.holdout)
        files["holdout"] = _file_info(settings.holdout, len(holdout))
        leakage = check_leakage(
            train_examples + validation_examples,
            holdout,
            threshold=settings.near_duplicate_threshold,
            near_policy=settings.near_duplicates,
        )

    def tokenize(examples: list[Example]) -> tuple[list[Tokenized], TokenizeReport]:
        return tokenize_all(
            examples,
            tokenizer,
            max_seq_len=settings.max_seq_len,
            too_long=settings.too_long,
            prompt_completion_as=settings.prompt_completion_as,
            stop_ids=stop_ids,
        )

    train, train_report = tokenize(train_examples)
    validation, validation_report = (
        tokenize(validation_examples) if validation_examples else ([], TokenizeReport())
    )
    return PreparedData(
        train=train,
        validation=validation,
        files=files,
        duplicates_dropped=dropped,
        leakage=leakage,
        train_report=train_report,
        validation_report=validation_report,
    )


def epoch_batches(
    items: list[Tokenized],
    *,
    batch_size: int,
    packing: bool,
    max_seq_len: int,
    pad_id: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> list[Batch]:
    """The micro-batches of one epoch, in a deterministic order derived from (seed, epoch).

    Resuming relies on this: epoch e's order can be rebuilt and entered at any batch index.
    With packing, the unit shuffled and batched is a packed row; rows are fixed by the lengths.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    if packing:
        rows = pack_rows(items, max_seq_len)
        if shuffle:
            rng.shuffle(rows)
        return [
            packed_batch([[items[i] for i in row] for row in rows[k : k + batch_size]], pad_id)
            for k in range(0, len(rows), batch_size)
        ]
    order = list(range(len(items)))
    if shuffle:
        rng.shuffle(order)
    return [
        pad_batch([items[i] for i in order[k : k + batch_size]], pad_id)
        for k in range(0, len(order), batch_size)
    ]
