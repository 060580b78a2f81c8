"""Break text that is too long for one chunk into units that fit, at the gentlest boundary.

Prose breaks at sentences, then at words; atomic blocks (tables, code) break at lines, and
only a single line that is itself too long breaks at words.
"""

from __future__ import annotations

import re
from collections.abc import Callable

TokenCounter = Callable[[str], int]

# A sentence ends at . ! or ? followed by space and a capital, digit or opening bracket/quote;
# abbreviations like "e.g. the" (lower case after) are left alone.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences (whitespace inside a sentence is kept)."""
    return [part for part in _SENTENCE_END.split(text.strip()) if part]


def split_words(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Greedily pack whitespace-separated words into pieces of at most `max_tokens`.

    Args:
        text: the text to split.
        max_tokens: the budget of one piece (at least 1).
        count: the embedder's token counter.

    Returns:
        Pieces in order, none over budget: a single word over budget (a base64 image, a
        minified line) is cut into pieces of its own, so no chunk can outgrow the prompt budget
        it was sized for.
    """
    pieces: list[str] = []
    words: list[str] = []
    used = 0
    for word in text.split():
        size = count(word)
        if size > max_tokens:
            if words:
                pieces.append(" ".join(words))
                words, used = [], 0
            pieces.extend(cut_word(word, max_tokens, count))
            continue
        if words and used + size > max_tokens:
            pieces.append(" ".join(words))
            words, used = [], 0
        words.append(word)
        used += size
    if words:
        pieces.append(" ".join(words))
    return pieces


def split_prose(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Split prose into sentence units, breaking over-long sentences at words."""
    units: list[str] = []
    for sentence in split_sentences(text):
        if count(sentence) <= max_tokens:
            units.append(sentence)
        else:
            units.extend(split_words(sentence, max_tokens, count))
    return units


def split_lines(
    text: str, max_tokens: int, count: TokenCounter, *, header_rows: int = 0
) -> list[str]:
    """Split an atomic block (table or code) between lines.

    Args:
        text: the block.
        max_tokens: the budget of one piece.
        count: the embedder's token counter.
        header_rows: leading lines repeated at the top of every piece (a table's header and
            separator), so each piece still reads as a table.

    Returns:
        Pieces in order, each made of whole lines unless one line alone is over budget.
    """
    lines = text.split("\n")
    header, rows = lines[:header_rows], lines[header_rows:]
    header_cost = count("\n".join(header)) if header else 0
    if header_cost * 2 > max_tokens:  # a header that eats the budget is not worth repeating
        header, rows, header_cost = [], lines, 0
    budget = max_tokens - header_cost
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for row in rows:
        size = count(row)
        if size > budget:
            if current:
                pieces.append("\n".join(header + current))
                current, used = [], 0
            pieces.extend("\n".join([*header, part]) for part in split_words(row, budget, count))
            continue
        if current and used + size > budget:
            pieces.append("\n".join(header + current))
            current, used = [], 0
        current.append(row)
        used += size
    if current:
        pieces.append("\n".join(header + current))
    return pieces


def cut_word(word: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Cut one over-long word into consecutive pieces of at most `max_tokens` tokens.

    Each cut is first guessed from the word's characters per token, then halved until it fits,
    so the counter runs a few times per piece, not once per character.
    """
    pieces: list[str] = []
    per_token = max(len(word) / max(count(word), 1), 1.0)
    start = 0
    while start < len(word):
        length = max(1, int(max_tokens * per_token))
        piece = word[start : start + length]
        while length > 1 and count(piece) > max_tokens:
            length = max(1, length // 2 if count(piece) > 2 * max_tokens else int(length * 0.9))
            piece = word[start : start + length]
        pieces.append(piece)
        start += length
    return pieces
