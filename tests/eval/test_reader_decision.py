"""The reader's decision fit: it reproduces its target hallucination rate on the split it was
fitted on, keeps every weight's sign, reports each signal's AUROC, and lands in the manifest in
the form the gateway applies (`grounding.policy.DecisionModel`)."""

from __future__ import annotations

import random

import pytest

from eval.reader_decision import fit_decision
from grounding.policy import DecisionModel


def rows(n: int = 400, seed: int = 0) -> list[dict[str, float | bool]]:
    """Answerable questions have larger reader margins and similarities, with overlap."""
    rng = random.Random(seed)
    out: list[dict[str, float | bool]] = []
    for i in range(n):
        answerable = i % 2 == 0
        shift = 1.5 if answerable else 0.0
        out.append({
            "reader_margin": rng.gauss(shift, 1.5) * 3,
            "span_score": rng.gauss(5 + shift, 2),
            "top_similarity": rng.gauss(0.45 + 0.1 * shift, 0.1),
            # backwards on purpose, as SQuAD 2.0's adversarial questions are: held at weight 0
            "question_coverage": rng.gauss(0.8 - 0.1 * shift, 0.1),
            "answerable": answerable,
        })  # fmt: skip
    return out


@pytest.mark.parametrize("target", [0.05, 0.10, 0.25])
def test_the_threshold_holds_the_target_on_its_split(target: float) -> None:
    data = rows()
    decision = fit_decision(
        data, target_hallucination=target, articles=["A"], top_k=5, retrieval="test"
    )
    assert decision.hallucination <= target
    model = DecisionModel(
        tuple(decision.features), tuple(decision.weights), decision.bias, decision.threshold
    )
    unanswerable = [r for r in data if not r["answerable"]]
    answered = [r for r in unanswerable if model.probability(r) >= model.threshold]  # type: ignore[arg-type]
    assert len(answered) / len(unanswerable) == pytest.approx(decision.hallucination)
    assert len(answered) / len(unanswerable) <= target


def test_weights_keep_their_signs_and_each_signal_is_reported() -> None:
    decision = fit_decision(
        rows(), target_hallucination=0.1, articles=["A"], top_k=5, retrieval="test"
    )
    weights = dict(zip(decision.features, decision.weights, strict=True))
    assert weights["reader_margin"] > 0 and weights["top_similarity"] >= 0
    assert weights["question_coverage"] == 0.0  # the data wanted it negative
    aurocs = {a.signal: a.auroc for a in decision.auroc}
    assert set(aurocs) == {*decision.features, "combined"}
    assert aurocs["combined"] is not None and aurocs["combined"] >= aurocs["reader_margin"] - 0.01
    assert aurocs["question_coverage"] is not None and aurocs["question_coverage"] < 0.5


def test_too_few_questions_of_a_class_is_refused() -> None:
    few = [r for r in rows() if r["answerable"]][:50] + [r for r in rows() if not r["answerable"]][
        :5
    ]
    with pytest.raises(ValueError, match="at least 10"):
        fit_decision(few, target_hallucination=0.1, articles=["A"], top_k=5, retrieval="test")


def test_gateway_search_retrieves_chunks_as_the_gateway_does() -> None:
    """Calibration reads what the gateway would serve: the paragraphs go through the real
    `Retriever` (embedded Qdrant, hybrid search over chunks) and the top similarity is the best
    chunk's cosine, so the fitted threshold is on the served distribution of signals."""
    from eval.reader_decision import GatewaySearch
    from tests.fakes.embedder import HashingEmbedder
    from training.reader.squad import Article

    article = Article(
        "Pumps",
        (
            "Pump P-101 is serviced every 90 days by the maintenance crew.",
            "The cafeteria opens at 7 am and closes at 3 pm on weekdays.",
            "Visitors sign in at the front desk and wear a badge at all times.",
        ),
        (),
    )
    with GatewaySearch(HashingEmbedder(), [article], top_k=2) as search:
        sources, top = search(article, "How often is pump P-101 serviced?")
    assert len(sources) == 2
    assert "every 90 days" in sources[0]
    assert top is not None and 0.0 < top <= 1.0


def test_the_label_is_whether_a_retrieved_source_holds_a_gold_answer() -> None:
    from eval.reader_decision import holds_answer

    sources = ["Pump P-101 is serviced  every 90\\ndays.".replace("\\n", "\n"), "Other text."]
    assert holds_answer(["Every 90 days"], sources)
    assert not holds_answer(["every 30 days"], sources)
    assert not holds_answer([], sources)
    assert not holds_answer(["  "], sources)
