"""Untrusted text and files cannot stall or bloat the process: linear markdown parsing, a hard
cap on chunk size, PDF extraction in a bounded child process."""

from __future__ import annotations

import base64
import os
import random
import re
from datetime import UTC, datetime

import pytest

from retrieval.chunking import ChunkingConfig, chunk_document
from retrieval.chunking.blocks import parse_heading
from retrieval.chunking.pack import is_table_separator
from retrieval.dense import MiniLMEmbedder
from retrieval.types import Document
from retrieval.untrusted import (
    ExtractLimits,
    TooLargeError,
    TooSlowError,
    UnreadableError,
    extract_pdf_text,
    html_to_markdown_isolated,
)
from tests.hostile import decompression_bomb, many_pages, redos_heading, text_pdf

# The patterns the scanners replaced: the scanners must agree with them on every line.
OLD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
OLD_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}")


def test_the_heading_and_table_scanners_agree_with_the_patterns_they_replace() -> None:
    rng = random.Random(7)
    for _ in range(50_000):
        line = "".join(rng.choice("# \t|:-ab#") for _ in range(rng.randint(0, 14)))
        old = OLD_HEADING.match(line)
        assert parse_heading(line) == ((len(old.group(1)), old.group(2).strip()) if old else None)
        assert is_table_separator(line) == bool(OLD_SEPARATOR.match(line))


def test_a_megabyte_heading_line_parses_as_one_heading(embedder: MiniLMEmbedder) -> None:
    # The old pattern needed minutes for 4 KB of this; a linear scan does a megabyte at once.
    line = redos_heading(1 << 20)
    assert parse_heading(line) == (1, line[2:].strip())
    text = f"{line}\n\nBody text under it.\n\n|" + " " * (1 << 20) + "x"
    chunks = chunk_document(
        Document("d", text), text, embedder.count_tokens, version="v",
        now=datetime.now(UTC), config=ChunkingConfig(), markdown=True,
    )  # fmt: skip
    assert any("Body text" in c.text for c in chunks)


def test_no_chunk_exceeds_the_token_budget_whatever_the_input(embedder: MiniLMEmbedder) -> None:
    blob = base64.b64encode(os.urandom(30_000)).decode()
    text = f"# Scan\n\nIntro.\n\n![img](data:image/png;base64,{blob})\n\n```\n{blob}\n```\n\nEnd."
    config = ChunkingConfig()
    chunks = chunk_document(
        Document("d", text), text, embedder.count_tokens, version="v",
        now=datetime.now(UTC), config=config, markdown=True,
    )  # fmt: skip
    assert max(embedder.count_tokens(c.text) for c in chunks) <= config.max_tokens
    joined = "".join(c.text for c in chunks)
    assert blob[:1000] in joined.replace(" ", "").replace("\n", "")  # cut, not dropped


def test_a_readable_pdf_comes_back_as_text() -> None:
    assert "Quarterly filter report" in extract_pdf_text(text_pdf("Quarterly filter report"))


@pytest.mark.parametrize(
    ("content", "limits", "error", "says"),
    [
        (decompression_bomb(100), ExtractLimits(), TooLargeError, "expands"),
        (many_pages(3000), ExtractLimits(max_pages=2000), TooLargeError, "3000 pages"),
        (decompression_bomb(70), ExtractLimits(memory_bytes=128 << 20), TooLargeError, "MiB"),
        (text_pdf("x " * 5000), ExtractLimits(max_chars=100), TooLargeError, "characters"),
        (decompression_bomb(60), ExtractLimits(timeout_s=0.05), TooSlowError, "longer than"),
        (b"%PDF-1.4\nnot really a pdf", ExtractLimits(), UnreadableError, "readable"),
    ],
    ids=["bomb", "pages", "memory", "output", "deadline", "garbage"],
)
def test_hostile_pdfs_fail_fast_with_a_reason(
    content: bytes, limits: ExtractLimits, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        extract_pdf_text(content, limits)
    # The worker died or finished; extraction keeps working for the next file.
    assert "still fine" in extract_pdf_text(text_pdf("still fine"))


def test_html_is_converted_in_the_bounded_child() -> None:
    html = "<h1>Ferry</h1><p>The ferry leaves at 7:15.</p>"
    assert html_to_markdown_isolated(html).split() == ["#", "Ferry", "The", "ferry", "leaves",
                                                       "at", "7:15."]  # fmt: skip
    nested = "<div>" * 200_000 + "deep" + "</div>" * 200_000
    assert "deep" in html_to_markdown_isolated(nested)
    with pytest.raises(TooLargeError, match="characters"):
        html_to_markdown_isolated("<p>" + "word " * 10_000 + "</p>", ExtractLimits(max_chars=100))
