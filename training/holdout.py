"""Guarding the frozen holdout and the training set: duplicates and leakage.

An example's identity for these checks is the text of its non-system turns (user and assistant),
normalised: a shared system prompt would otherwise make every pair of short examples look alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.data import DataError, Example
from training.dedup import exact_duplicates, near_duplicates, normalize


def example_text(example: Example) -> str:
    return "\n".join(m["content"] for m in example.messages if m["role"] != "system")


def drop_or_refuse_duplicates(examples: list[Example], policy: str) -> tuple[list[Example], int]:
    """Find exact (normalised) duplicates; refuse them or keep the first of each group.

    Returns:
        The examples to keep and how many were dropped.

    Raises:
        DataError: with `policy == "fail"`, listing the duplicate groups by line.
    """
    groups = exact_duplicates([example_text(e) for e in examples])
    if not groups:
        return examples, 0
    if policy == "fail":
        listed = "\n".join(
            "  " + ", ".join(examples[i].source for i in group) for group in groups[:20]
        )
        raise DataError(
            f"{sum(len(g) - 1 for g in groups)} exact duplicates in the training data "
            f"({len(groups)} groups):\n{listed}\nremove them, or set data.duplicates: drop"
        )
    dropped = {i for group in groups for i in group[1:]}
    return [e for i, e in enumerate(examples) if i not in dropped], len(dropped)


@dataclass
class LeakageReport:
    """How the training data relates to the holdout."""

    exact: int = 0
    near: int = 0
    threshold: float = 0.0
    pairs: list[dict[str, object]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.exact:
            return f"LEAK: {self.exact} holdout examples in training data"
        if self.near:
            return f"{self.near} near-duplicates (Jaccard >= {self.threshold}) reported"
        return "clean"


def check_leakage(
    train: list[Example], holdout: list[Example], *, threshold: float, near_policy: str
) -> LeakageReport:
    """Refuse training data that contains holdout examples; report near-duplicates.

    Args:
        train: every example that will be trained or validated on.
        holdout: the frozen holdout.
        threshold: character 5-gram Jaccard similarity at which a pair is a near-duplicate.
        near_policy: `warn` (report only) or `fail`.

    Returns:
        The report (exact is always 0 when it returns).

    Raises:
        DataError: a holdout example appears (normalised) in the training data, or near
            duplicates exist and `near_policy == "fail"`.
    """
    held = {normalize(example_text(e)): e.source for e in holdout}
    leaks = [(e.source, held[key]) for e in train if (key := normalize(example_text(e))) in held]
    if leaks:
        listed = "\n".join(f"  {t} == holdout {h}" for t, h in leaks[:20])
        raise DataError(
            f"{len(leaks)} training examples are in the frozen holdout; remove them from the "
            f"training data (never from the holdout):\n{listed}"
        )
    train_texts = [example_text(e) for e in train]
    hold_texts = [example_text(e) for e in holdout]
    pairs = near_duplicates(train_texts, hold_texts, threshold)
    report = LeakageReport(
        exact=0,
        near=len(pairs),
        threshold=threshold,
        pairs=[
            {
                "train": train[p.left].source,
                "holdout": holdout[p.right].source,
                "similarity": round(p.similarity, 4),
            }
            for p in pairs[:50]
        ],
    )
    if pairs and near_policy == "fail":
        listed = "\n".join(
            f"  {p['train']} ~ {p['holdout']} ({p['similarity']})" for p in report.pairs[:20]
        )
        raise DataError(
            f"{len(pairs)} training examples are near-duplicates of holdout examples "
            f"(5-gram Jaccard >= {threshold}):\n{listed}\n"
            "remove them, or set data.near_duplicates: warn"
        )
    return report
