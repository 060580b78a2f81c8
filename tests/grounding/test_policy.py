"""The grounding policy on hand-made readings and answers: its three outcomes per answer mode, and
citations repaired (a right answer cited to the wrong source keeps its words)."""

from __future__ import annotations

import pytest

from grounding.citations import check_and_repair, cited, without_citations
from grounding.policy import DecisionModel, Evidence, plan, settle

SOURCES = [
    "The river Calton flows north through Ardley before it meets the sea.",
    "Ardley is a market town; its mill was built in 1820.",
    "Pump P-101 is serviced every 90 days by the plant's maintenance crew.",
]
# p = sigmoid(margin - 2): answerable above a margin of 2 at threshold 0.5.
MODEL = DecisionModel(features=("reader_margin",), weights=(1.0,), bias=-2.0, threshold=0.5)


def reading(source: int, text: str, margin: float) -> Evidence:
    start = SOURCES[source - 1].find(text) if text else None
    end = None if start is None else start + len(text)
    return Evidence(source, text, start, end, span_score=margin, null_score=0.0)


def decided(mode: str, margin: float = 6.0):  # type: ignore[no-untyped-def]
    readings = [reading(1, "", -3.0), reading(2, "", -2.0), reading(3, "every 90 days", margin)]
    return plan(mode, readings, MODEL, top_similarity=0.8, question_coverage=1.0)  # type: ignore[arg-type]


def test_a_right_answer_cited_to_the_wrong_source_is_repaired_not_withdrawn() -> None:
    checked = check_and_repair("It is serviced every 90 days [1].", SOURCES, min_support=0.5)
    assert checked.supported and checked.repaired
    assert checked.text == "It is serviced every 90 days [3]." and checked.citations == [3]


def test_a_right_citation_stays_and_numbers_naming_no_source_are_dropped() -> None:
    kept = check_and_repair("Every 90 days [3].", SOURCES, min_support=0.5)
    assert kept.text == "Every 90 days [3]." and not kept.repaired
    copied = check_and_repair("Every 90 days [3][39].", SOURCES, min_support=0.5)
    assert copied.citations == [3] and copied.dropped == [39] and "[39]" not in copied.text
    uncited = check_and_repair("every 90 days", SOURCES, min_support=0.5)
    assert uncited.text == "every 90 days [3]" and uncited.repaired


def test_an_answer_no_source_holds_is_unsupported() -> None:
    checked = check_and_repair("Every 30 days by contractors [3].", SOURCES, min_support=0.8)
    assert not checked.supported and checked.best == 3


def test_auto_serves_a_supported_answer_with_its_repaired_citation() -> None:
    settled = settle(
        decided("auto"), "Every 90 days [2].", SOURCES, generator_abstained=False, min_support=0.5
    )
    assert (settled.outcome, settled.why) == ("answer", "citation_repaired")
    assert settled.text == "Every 90 days [3]." and settled.citations == [3]


def test_auto_extracts_when_the_generated_answer_is_unsupported_or_abstains() -> None:
    unsupported = settle(
        decided("auto"), "Weekly [3].", SOURCES, generator_abstained=False, min_support=0.5
    )
    assert (unsupported.outcome, unsupported.why) == ("extract", "generated_unsupported")
    assert unsupported.text == "every 90 days [3]" and unsupported.citations == [3]
    abstained = settle(decided("auto"), "I don't know", SOURCES, generator_abstained=True,
                       min_support=0.5)  # fmt: skip
    assert (abstained.outcome, abstained.why) == ("extract", "generator_abstained")


@pytest.mark.parametrize("mode", ["auto", "generate", "extract"])
def test_every_mode_abstains_below_the_threshold(mode: str) -> None:
    near_miss = decided(mode, margin=1.0)  # p = sigmoid(-1) < 0.5
    assert not near_miss.answerable and near_miss.probability < 0.5
    settled = settle(near_miss, "Every 90 days [3].", SOURCES, generator_abstained=False,
                     min_support=0.5)  # fmt: skip
    assert (settled.outcome, settled.text, settled.why) == ("abstain", None, "not_answerable")


def test_generate_never_extracts_and_extract_never_needs_the_generator() -> None:
    generate = decided("generate")
    assert generate.needs_generator
    settled = settle(generate, "Weekly [3].", SOURCES, generator_abstained=False, min_support=0.5)
    assert (settled.outcome, settled.why) == ("abstain", "generated_unsupported")
    extract = decided("extract")
    assert extract.answerable and not extract.needs_generator
    settled = settle(extract, None, SOURCES, generator_abstained=False, min_support=0.5)
    assert (settled.outcome, settled.text) == ("extract", "every 90 days [3]")


def test_a_request_threshold_overrides_the_model() -> None:
    readings = [reading(3, "every 90 days", 3.0)]  # p = sigmoid(1) = 0.73
    strict = plan("auto", readings, MODEL, top_similarity=None, question_coverage=1.0,
                  threshold=0.9)  # fmt: skip
    assert not strict.answerable and strict.threshold == 0.9
    assert plan("auto", readings, MODEL, top_similarity=None, question_coverage=1.0).answerable


def test_no_span_anywhere_is_no_answer() -> None:
    empty = plan("auto", [reading(1, "", 9.0)], MODEL, top_similarity=0.9, question_coverage=1.0)
    assert not empty.answerable and empty.evidence is None


def test_citation_helpers() -> None:
    assert cited("a [2] b [1] c [2]") == [2, 1]
    assert without_citations("It is X [1][2].") == "It is X."


def test_an_extracted_span_never_serves_the_documents_own_reference_numbers() -> None:
    """A paper's "[39]" inside the reader's span would read as a citation of source 39 (or of
    whichever source happens to have that number): it is dropped, and the span's own source is
    the only citation served."""
    paper = ["Statins lower LDL cholesterol by 30% [39] in most adults [2].", "Unrelated text."]
    span = "lower LDL cholesterol by 30% [39]"
    readings = [Evidence(1, span, 7, 7 + len(span), span_score=8.0, null_score=0.0)]
    decision = plan("extract", readings, MODEL, top_similarity=0.8, question_coverage=1.0)
    settled = settle(decision, None, paper, generator_abstained=False, min_support=0.5)
    assert settled.text == "lower LDL cholesterol by 30% [1]" and settled.citations == [1]
    only_numbers = [Evidence(1, "[39]", 29, 33, span_score=8.0, null_score=0.0)]
    assert (
        plan("extract", only_numbers, MODEL, top_similarity=0.8, question_coverage=1.0).evidence
        is None
    )
