"""The contract every reader keeps (`grounding.policy.SourceReaderModel`), checked on the real
reader (tests/training/test_reader_recipe.py) and on the fast tests' `PhraseReader`."""

from __future__ import annotations

from grounding.policy import SourceReaderModel

CHUNKS = [
    "The Orion vault was built in 1921 by the engineer Mara Vell. Its door weighs forty tonnes.",
    "Visitors reach the vault through a tunnel lined with green tiles from Porto.",
    "short",
]


def check_reader_contract(reader: SourceReaderModel) -> None:
    evidence = reader.evidence("When was the Orion vault built?", CHUNKS)
    assert [e.source for e in evidence] == [1, 2, 3]
    for chunk, found in zip(CHUNKS, evidence, strict=True):
        if found.text:
            assert found.start is not None and found.end is not None
            assert chunk[found.start : found.end] == found.text
        assert found.margin == found.span_score - found.null_score
    assert reader.evidence("anything?", []) == []
