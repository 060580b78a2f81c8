"""The fast tests' `PhraseReader` keeps the reader contract (the real one: test_reader_recipe)."""

from __future__ import annotations

from tests.fakes.reader import PhraseReader
from tests.grounding.reader_contract import check_reader_contract


def test_the_phrase_reader_keeps_the_reader_contract() -> None:
    check_reader_contract(PhraseReader(["1921"]))


def test_the_phrase_reader_finds_only_its_phrases() -> None:
    found = PhraseReader(["1921"]).evidence("When?", ["built in 1921", "a tunnel"])
    assert found[0].text == "1921" and found[0].margin > 0
    assert found[1].margin < 0
