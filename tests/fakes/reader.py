"""`PhraseReader`: the grounding reader without weights, for fast tests of the gateway's policy.

It "finds" a span where a chunk contains one of the phrases it was given (margin +6) and
otherwise prefers no answer, pointing at the chunk's first word (margin -4); its decision is the
one it was given (None: uncalibrated). It keeps the real reader's contract
(`grounding.policy.SourceReaderModel`), checked on both in `tests/grounding/reader_contract.py`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from grounding.policy import DecisionModel, Evidence

_FIRST_WORD = re.compile(r"\S+")


class PhraseReader:
    def __init__(self, phrases: Sequence[str], decision: DecisionModel | None = None) -> None:
        self.phrases = list(phrases)
        self.decision = decision
        self.questions: list[tuple[str, list[str]]] = []

    def evidence(self, question: str, chunks: Sequence[str]) -> list[Evidence]:
        self.questions.append((question, list(chunks)))
        out = []
        for number, chunk in enumerate(chunks, start=1):
            found = next((p for p in self.phrases if p in chunk), None)
            if found is not None:
                start = chunk.index(found)
                out.append(Evidence(number, found, start, start + len(found), 8.0, 2.0))
                continue
            word = _FIRST_WORD.search(chunk)
            if word is None:
                out.append(Evidence(number, "", None, None, float("-inf"), 2.0))
            else:
                out.append(Evidence(number, word.group(), word.start(), word.end(), 1.0, 5.0))
        return out

    def decision_model(self) -> DecisionModel | None:
        return self.decision
