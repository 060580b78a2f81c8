"""Chunking: structure, sizes, overlap, atomic tables and code, stable ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retrieval.chunking import (
    BlockKind,
    ChunkingConfig,
    chunk_document,
    chunk_id,
    content_version,
    pack_blocks,
    parse_blocks,
)
from retrieval.types import Document


def words(text: str) -> int:
    """A stand-in token counter: one token per whitespace word (keeps the arithmetic visible)."""
    return len(text.split())


NOW = datetime(2024, 5, 1, tzinfo=UTC)

MARKDOWN = """# Guide

Intro paragraph here.

## Install

- first step
- second step
  continued

| col | val |
|-----|-----|
| a | 1 |
| b | 2 |

```sh
pip install x

run x
```

### Notes
# Other
Tail text.
"""


def test_blocks_carry_heading_paths_and_kinds() -> None:
    blocks = parse_blocks(MARKDOWN)
    assert [(b.kind, b.heading_path) for b in blocks] == [
        (BlockKind.PARAGRAPH, ("Guide",)),
        (BlockKind.LIST_ITEM, ("Guide", "Install")),
        (BlockKind.LIST_ITEM, ("Guide", "Install")),
        (BlockKind.TABLE, ("Guide", "Install")),
        (BlockKind.CODE, ("Guide", "Install")),
        (BlockKind.PARAGRAPH, ("Other",)),
    ]
    assert blocks[2].text == "- second step\n  continued"
    # The blank line inside the fence stays inside the one code block.
    assert blocks[4].text == "```sh\npip install x\n\nrun x\n```"


def test_plain_text_ignores_markdown_syntax() -> None:
    blocks = parse_blocks("# not a heading\nline two\n\n| not | table |", markdown=False)
    assert [b.text for b in blocks] == ["# not a heading\nline two", "| not | table |"]
    assert all(b.kind is BlockKind.PARAGRAPH and b.heading_path == () for b in blocks)


def test_table_that_fits_is_never_split() -> None:
    table = "| h1 | h2 |\n|---|---|\n" + "\n".join(f"| r{i} | v{i} |" for i in range(5))
    text = "one two three four five six seven eight.\n\n" + table  # 8 + 31 tokens
    chunks = pack_blocks(parse_blocks(text), max_tokens=32, overlap_tokens=0, count=words)
    assert [c.text for c in chunks] == ["one two three four five six seven eight.", table]


def test_oversized_table_splits_between_rows_with_header_repeated() -> None:
    rows = [f"| r{i} | v{i} |" for i in range(6)]
    table = "| h1 | h2 |\n|---|---|\n" + "\n".join(rows)
    chunks = pack_blocks(parse_blocks(table), max_tokens=16, overlap_tokens=0, count=words)
    assert len(chunks) > 1
    seen_rows = []
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[:2] == ["| h1 | h2 |", "|---|---|"]
        assert chunk.token_count <= 16
        seen_rows += lines[2:]
    assert seen_rows == rows  # every row once, in order, none cut


def test_code_block_splits_only_between_lines_and_long_line_by_words() -> None:
    code = "```\n" + "\n".join(["x = 1 + 2"] * 4) + "\n" + " ".join(["tok"] * 12) + "\n```"
    chunks = pack_blocks(parse_blocks(code), max_tokens=8, overlap_tokens=0, count=words)
    assert all(c.token_count <= 8 for c in chunks)
    lines = [line for c in chunks for line in c.text.split("\n")]
    assert lines.count("x = 1 + 2") == 4
    assert " ".join(line for line in lines if line.startswith("tok")).split() == ["tok"] * 12


def test_prose_overlap_repeats_trailing_sentences_within_a_section() -> None:
    sentences = [f"Sentence {i} has five words." for i in range(6)]
    chunks = pack_blocks(parse_blocks(" ".join(sentences)), 10, 5, words)
    assert [c.text for c in chunks] == [
        "Sentence 0 has five words. Sentence 1 has five words.",
        "Sentence 1 has five words. Sentence 2 has five words.",
        "Sentence 2 has five words. Sentence 3 has five words.",
        "Sentence 3 has five words. Sentence 4 has five words.",
        "Sentence 4 has five words. Sentence 5 has five words.",
    ]


def test_chunks_never_cross_a_heading_and_carry_no_overlap_across() -> None:
    text = "# A\nalpha beta gamma.\n\n# B\ndelta epsilon."
    chunks = pack_blocks(parse_blocks(text), 50, 10, words)
    assert [(c.heading_path, c.text) for c in chunks] == [
        (("A",), "alpha beta gamma."),
        (("B",), "delta epsilon."),
    ]


def test_invalid_budget_is_rejected() -> None:
    with pytest.raises(ValueError, match="overlap"):
        pack_blocks([], max_tokens=10, overlap_tokens=10, count=words)


def test_chunk_document_metadata_and_ids() -> None:
    doc = Document(
        "doc-1", MARKDOWN, title="Guide", uri="file:///guide.md", metadata={"lang": "en"}
    )
    chunks = chunk_document(
        doc,
        MARKDOWN,
        words,
        version="v1",
        now=NOW,
        config=ChunkingConfig(max_tokens=40, overlap_tokens=5),
    )
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {c.doc_id for c in chunks} == {"doc-1"}
    assert {c.updated_at for c in chunks} == {"2024-05-01T00:00:00.000000Z"}
    assert chunks[0].uri == "file:///guide.md" and chunks[0].metadata == {"lang": "en"}
    assert [c.chunk_id for c in chunks] == [chunk_id("doc-1", "v1", i) for i in range(len(chunks))]
    again = chunk_document(
        doc,
        MARKDOWN,
        words,
        version="v1",
        now=NOW,
        config=ChunkingConfig(max_tokens=40, overlap_tokens=5),
    )
    assert again == chunks  # deterministic: re-ingesting is idempotent


def test_chunk_ids_differ_by_doc_version_and_position() -> None:
    ids = {
        chunk_id("d", "v1", 0),
        chunk_id("d", "v1", 1),
        chunk_id("d", "v2", 0),
        chunk_id("e", "v1", 0),
    }
    assert len(ids) == 4
    assert chunk_id("d", "v1", 0) == chunk_id("d", "v1", 0)


def test_content_version_follows_content_only() -> None:
    doc = Document("d", "text", title="T")
    assert content_version(doc) == content_version(Document("d", "text", title="T"))
    assert content_version(doc) != content_version(Document("d", "text!", title="T"))
    assert content_version(doc) != content_version(Document("d", "text", title="U"))


def test_index_text_has_title_and_headings_once() -> None:
    doc = Document("d", "# Guide\n## Setup\nBody words.", title="Guide")
    [chunk] = chunk_document(doc, doc.text, words, version="v", now=NOW)
    assert chunk.index_text == "Guide / Setup\nBody words."


def test_real_wordpiece_budget_is_respected(minilm_counter: object) -> None:
    from retrieval.dense import MiniLMEmbedder

    assert isinstance(minilm_counter, MiniLMEmbedder)
    body = "\n\n".join(
        f"Paragraph {i}. " + "Electrophysiological measurements of mitochondria. " * 30
        for i in range(3)
    )
    doc = Document("d", body)
    chunks = chunk_document(doc, body, minilm_counter.count_tokens, version="v", now=NOW)
    assert len(chunks) > 3
    assert all(minilm_counter.count_tokens(c.text) <= 200 for c in chunks)
