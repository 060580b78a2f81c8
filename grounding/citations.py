"""Which source holds an answer, and the answer with citations that say so.

A generated answer is supported when one source holds it (verbatim after normalisation, or most of
its content words). A right answer that cites the wrong source keeps its text and has its
citations repaired to the source that holds it; numbers that name no source (a paper's own "[39]"
copied from its text, a "[7]" of five sources) are never served as citations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from grounding.answerability import content_words
from grounding.prompt import cited_sources as cited

CITATION = re.compile(r"\s*\[\d{1,3}\]")
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def without_citations(answer: str) -> str:
    return CITATION.sub("", answer).strip()


def _normal(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


@dataclass(frozen=True)
class SourceSupport:
    """How well one source holds a claim."""

    source: int  # 1-based
    verbatim: bool
    overlap: float  # share of the claim's content words the source contains


def support_by_source(claim: str, sources: Sequence[str]) -> list[SourceSupport]:
    """Each source's support of `claim` (citations removed first), in source order."""
    text = without_citations(claim)
    normal = _normal(text)
    words = content_words(text)
    out = []
    for number, source in enumerate(sources, start=1):
        have_normal = _normal(source)
        verbatim = bool(normal) and normal in have_normal
        if not words:
            overlap = 1.0 if verbatim else 0.0
        else:
            have = set(have_normal.split())
            overlap = sum(1 for w in words if w in have) / len(words)
        out.append(SourceSupport(number, verbatim, overlap))
    return out


@dataclass(frozen=True)
class CitedAnswer:
    """An answer checked against its sources.

    Attributes:
        text: the answer as served (citations repaired when `repaired`).
        citations: the valid source numbers it cites.
        supported: some source holds it (its best support reaches the threshold).
        best: the source that holds it best (None when no source holds any of it).
        overlap: that source's share of the answer's content words.
        verbatim: that source holds the answer verbatim.
        repaired: the citations were changed (a wrong or missing [n], or numbers naming no
            source, which are dropped).
        dropped: cited numbers that named no source.
    """

    text: str
    citations: list[int]
    supported: bool
    best: int | None
    overlap: float
    verbatim: bool
    repaired: bool
    dropped: list[int]


def check_and_repair(answer: str, sources: Sequence[str], *, min_support: float) -> CitedAnswer:
    """Check `answer` against `sources` and repair its citations when it is supported.

    A supported answer that already cites a source holding it as well as the best one keeps its
    citations (less any number naming no source); otherwise its citations become `[best]`.
    """
    numbers = cited(answer)
    dropped = [n for n in numbers if not 1 <= n <= len(sources)]
    valid = [n for n in numbers if n not in dropped]
    supports = support_by_source(answer, sources)
    ranked = sorted(supports, key=lambda s: (s.verbatim, s.overlap), reverse=True)
    best = ranked[0] if ranked and (ranked[0].overlap > 0 or ranked[0].verbatim) else None
    supported = best is not None and (best.verbatim or best.overlap >= min_support)
    if not supported or best is None:
        return CitedAnswer(
            text=answer if not dropped else _recite(answer, valid),
            citations=valid,
            supported=False,
            best=best.source if best else None,
            overlap=best.overlap if best else 0.0,
            verbatim=bool(best and best.verbatim),
            repaired=bool(dropped),
            dropped=dropped,
        )
    holds_as_well = {
        s.source for s in supports if (s.verbatim, s.overlap) >= (best.verbatim, best.overlap)
    }
    keep = [n for n in valid if n in holds_as_well]
    citations = keep or [best.source]
    repaired = citations != numbers
    return CitedAnswer(
        text=_recite(answer, citations) if repaired else answer,
        citations=citations,
        supported=True,
        best=best.source,
        overlap=best.overlap,
        verbatim=best.verbatim,
        repaired=repaired,
        dropped=dropped,
    )


def _recite(answer: str, citations: Sequence[int]) -> str:
    """The answer's text with its citations replaced by `citations`, placed at its end."""
    body = without_citations(answer)
    marks = "".join(f" [{n}]" for n in citations)
    if body.endswith((".", "!", "?")) and marks:
        return f"{body[:-1]}{marks}{body[-1]}"
    return f"{body}{marks}"


def with_citation(span: str, source: int) -> str:
    """An extracted span served as an answer: the span and its source's number.

    Bracketed numbers inside the span are the document's own (a paper's "[39]"): served, they
    would read as citations of sources they do not name, so they are dropped first.
    """
    return f"{without_citations(span)} [{source}]"
