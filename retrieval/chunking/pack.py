"""Pack blocks into chunks of at most `max_tokens` embedder tokens, with overlap.

Chunks never cross a heading boundary, so each has one heading path. A block that fits in an
empty chunk is never split; only a block larger than a whole chunk is broken (prose at
sentences, tables and code between rows). Overlap repeats the trailing prose sentences of the
previous chunk of the same section, which keeps a fact that straddles a boundary retrievable.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.chunking.blocks import Block, BlockKind
from retrieval.chunking.split import TokenCounter, split_lines, split_prose


@dataclass(frozen=True)
class PackedChunk:
    """Chunk text before ids and metadata are attached."""

    text: str
    heading_path: tuple[str, ...]
    token_count: int


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    block: int
    prose: bool


def _units(blocks: list[Block], max_tokens: int, count: TokenCounter) -> list[_Unit]:
    units: list[_Unit] = []
    for number, block in enumerate(blocks):
        prose = not block.atomic
        size = count(block.text)
        if size <= max_tokens:
            units.append(_Unit(block.text, size, number, prose))
            continue
        if prose:
            pieces = split_prose(block.text, max_tokens, count)
        else:
            lines = block.text.split("\n")
            is_table = block.kind is BlockKind.TABLE
            header = 2 if is_table and len(lines) > 2 and is_table_separator(lines[1]) else 0
            pieces = split_lines(block.text, max_tokens, count, header_rows=header)
        units.extend(_Unit(piece, count(piece), number, prose) for piece in pieces)
    return units


def _render(units: list[_Unit]) -> str:
    parts: list[str] = []
    for position, unit in enumerate(units):
        if position:
            same_block = units[position - 1].block == unit.block
            parts.append((" " if unit.prose else "\n") if same_block else "\n\n")
        parts.append(unit.text)
    return "".join(parts)


def pack_blocks(
    blocks: list[Block], max_tokens: int, overlap_tokens: int, count: TokenCounter
) -> list[PackedChunk]:
    """Pack blocks into chunks.

    Args:
        blocks: the document's blocks in order.
        max_tokens: the budget of one chunk in the embedder's tokens.
        overlap_tokens: at most this many tokens of trailing prose are repeated.
        count: the embedder's token counter.

    Returns:
        Chunks in document order.

    Raises:
        ValueError: when the budget is not positive or the overlap is not below it.
    """
    if max_tokens < 1 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap_tokens < max_tokens")
    chunks: list[PackedChunk] = []
    current: list[_Unit] = []
    fresh = 0  # units of `current` that are not overlap
    section: tuple[str, ...] | None = None

    def close() -> None:
        if fresh:
            chunks.append(
                PackedChunk(_render(current), section or (), sum(u.tokens for u in current))
            )

    for unit in _units(blocks, max_tokens, count):
        unit_section = blocks[unit.block].heading_path
        if unit_section != section:
            close()
            current, fresh, section = [], 0, unit_section
        elif sum(u.tokens for u in current) + unit.tokens > max_tokens:
            close()
            carried: list[_Unit] = []
            budget = min(overlap_tokens, max_tokens - unit.tokens)
            for previous in reversed(current):
                if not previous.prose or previous.tokens > budget:
                    break
                carried.insert(0, previous)
                budget -= previous.tokens
            current, fresh = carried, 0
        current.append(unit)
        fresh += 1
    close()
    return chunks


def is_table_separator(line: str) -> bool:
    """Whether a markdown table line is the header separator (`|---|:--:|`). A scan, linear in
    the line: `^\\s*\\|?\\s*:?-{2,}` as an expression was quadratic on a line of spaces."""
    rest = line.lstrip()
    rest = rest[1:].lstrip() if rest.startswith("|") else rest
    rest = rest[1:] if rest.startswith(":") else rest
    return rest.startswith("--")
