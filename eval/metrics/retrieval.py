"""Ranking metrics over graded relevance judgements (qrels), as BEIR reports them.

Gains are linear in the grade (trec_eval's `ndcg_cut`, which BEIR uses); a grade <= 0 is not
relevant. Means are taken over the queries that have judgements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Qrels = Mapping[str, int]  # doc id -> grade, for one query


def recall_at(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Share of the relevant documents found in the top k (0 when none is relevant)."""
    relevant = {doc for doc, grade in qrels.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """Reciprocal rank of the first relevant document in the top k (0 when none)."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if qrels.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """Normalized discounted cumulative gain at k with graded (linear) gains.

    Args:
        ranked: doc ids, best first (duplicates should already be removed).
        qrels: grades of the judged documents.
        k: cut-off.

    Returns:
        DCG / ideal DCG in [0, 1]; 0 when no document is relevant.
    """
    dcg = sum(
        max(qrels.get(doc, 0), 0) / math.log2(rank + 1)
        for rank, doc in enumerate(ranked[:k], start=1)
    )
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, start=1))
    return dcg / idcg if idcg else 0.0


def dedupe(doc_ids: Sequence[str]) -> list[str]:
    """Keep each document's first (best) position: chunk hits to a document ranking."""
    return list(dict.fromkeys(doc_ids))  # dicts keep first insertion order


def evaluate_run(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Qrels],
    recall_ks: Sequence[int] = (1, 5, 10, 100),
) -> dict[str, float]:
    """Mean metrics of a run over the judged queries.

    Args:
        run: query id -> ranked doc ids (a missing query counts as an empty ranking).
        qrels: query id -> judgements.
        recall_ks: cut-offs for recall.

    Returns:
        {"ndcg@10", "mrr@10", "recall@k"...} averaged over `qrels`' queries.
    """
    judged = [qid for qid in qrels if any(g > 0 for g in qrels[qid].values())]
    if not judged:
        return {}
    totals: dict[str, float] = {"ndcg@10": 0.0, "mrr@10": 0.0}
    totals.update({f"recall@{k}": 0.0 for k in recall_ks})
    for qid in judged:
        ranked = run.get(qid, [])
        totals["ndcg@10"] += ndcg_at(ranked, qrels[qid], 10)
        totals["mrr@10"] += mrr_at(ranked, qrels[qid], 10)
        for k in recall_ks:
            totals[f"recall@{k}"] += recall_at(ranked, qrels[qid], k)
    return {name: value / len(judged) for name, value in totals.items()}
