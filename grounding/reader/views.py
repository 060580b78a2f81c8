"""What the reader reads of a chunk: the chunk itself, or, where it holds a markdown table, its
prose and one view per table row written as "Header: cell. Header: cell."

Why: the reader was trained on prose. Given a two-row table whole, it gives every row's
question a margin far below zero (-5.9 to -6.2), and with a heading line above the table it
took the other row's cell. Read one row at a time, with the column names beside the cells, it
picks the asked row's cell at margins +0.5 and +0.7 (`python -m eval.perf.reader_tables`
prints both ways). It still cannot tell a pump the table lacks: that question also gets a row's
cell, at +0.1, which the calibrated decision has to refuse. HTML tables reach here as
markdown tables (`retrieval/extract.py`), and the chunker repeats a table's header row in every
piece of a split table, so each chunk's rows have their header.

Every view keeps, per character, where it came from in the chunk, so a span read in a view maps
back to the chunk's own characters: a served span is always the chunk's text, never the view's
added column names.
"""

from __future__ import annotations

from dataclasses import dataclass

# The chunker's rule, so a table here is one the chunker repeated the header of.
from retrieval.chunking.pack import is_table_separator

# A chunk whose tables hold more rows than this is read whole. Each row view repeats the question
# and the column names, so a chunk read row by row costs a few times its tokens: 16 rows of a
# 256-token chunk are about 16 windows of ~40 tokens, against one of 256 read whole.
MAX_ROWS = 16
_ADDED = -1  # origin of a character the view added (a column name, ": ", ". ")


@dataclass(frozen=True)
class View:
    """A text the reader reads for a chunk, and where each of its characters sits in the chunk.

    Attributes:
        text: what the reader reads.
        origin: per character of `text`, its index in the chunk (-1: added by the view).
    """

    text: str
    origin: tuple[int, ...]

    def chunk_span(self, start: int, end: int) -> tuple[int, int] | None:
        """The chunk's characters [start, end) for the view's [start, end).

        The span is cut at the first character the view added or moved (a column name, the
        boundary of a cell), so it stays inside one cell of the chunk; None when it starts on
        added characters only.
        """
        first = next((i for i in range(start, end) if self.origin[i] != _ADDED), None)
        if first is None:
            return None
        last = first
        while last + 1 < end and self.origin[last + 1] == self.origin[last] + 1:
            last += 1
        return self.origin[first], self.origin[last] + 1


def whole(chunk: str) -> View:
    """The chunk as it is."""
    return View(chunk, tuple(range(len(chunk))))


def reading_views(chunk: str, *, max_rows: int = MAX_ROWS) -> list[View]:
    """The views the reader reads for one chunk (at least one).

    A chunk without a markdown table (a `|` header line, a `|---|` separator line, rows) is read
    whole. Otherwise: its lines outside tables as one view (when they hold text), then one view
    per body row of each table.
    """
    if "|" not in chunk:  # most chunks: no line scan on the reader's hot path
        return [whole(chunk)]
    lines = _lines(chunk)
    tables = _tables(chunk, lines)
    if not tables or sum(len(rows) for _, rows in tables) > max_rows:
        return [whole(chunk)]
    in_table = {i for header, rows in tables for i in (header, header + 1, *rows)}
    prose = _joined(chunk, [span for i, span in enumerate(lines) if i not in in_table])
    views = [prose] if prose.text.strip() else []
    for header, rows in tables:
        names = [chunk[a:b] for a, b in _cells(chunk, *lines[header])]
        views.extend(_row_view(chunk, names, _cells(chunk, *lines[row])) for row in rows)
    return views


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, without its newline."""
    spans, start = [], 0
    for end, char in enumerate(text):
        if char == "\n":
            spans.append((start, end))
            start = end + 1
    spans.append((start, len(text)))
    return spans


def _is_row(text: str, span: tuple[int, int]) -> bool:
    """A line with a cell boundary (outer pipes are optional in markdown)."""
    return "|" in text[span[0] : span[1]].replace("\\|", "")


def _tables(text: str, lines: list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """(header line, body lines) of every markdown table, by line index: a row line followed by
    a separator line, then the row lines after it (a table without body rows is none)."""
    tables, i = [], 0
    while i + 1 < len(lines):
        if _is_row(text, lines[i]) and is_table_separator(text[slice(*lines[i + 1])]):
            body = i + 2
            while body < len(lines) and _is_row(text, lines[body]):
                body += 1
            if body > i + 2:
                tables.append((i, list(range(i + 2, body))))
            i = body
        else:
            i += 1
    return tables


def _cells(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each cell's text, stripped, on one table line. The outer pipes are
    optional; an escaped `\\|` is not a boundary."""
    bounds, i = [], start
    while i < end:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "|":
            bounds.append(i)
        i += 1
    line = text[start:end]
    left = bounds.pop(0) if line.lstrip().startswith("|") and bounds else start - 1
    right = bounds.pop() if line.rstrip().endswith("|") and bounds else end
    cells = []
    for a, b in zip([left, *bounds], [*bounds, right], strict=True):
        a += 1
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        cells.append((a, b))
    return cells


def _row_view(text: str, names: list[str], cells: list[tuple[int, int]]) -> View:
    """One row as "Name: cell. Name: cell." (a cell without a column name stands alone)."""
    parts: list[str] = []
    origin: list[int] = []

    def add(piece: str, at: int = _ADDED) -> None:
        parts.append(piece)
        origin.extend(range(at, at + len(piece)) if at != _ADDED else [_ADDED] * len(piece))

    for column, (a, b) in enumerate(cells):
        if a == b:
            continue
        if parts:
            add(" ")
        name = names[column] if column < len(names) else ""
        if name:
            add(f"{name}: ")
        add(text[a:b], a)
        if text[b - 1] not in ".!?;:":
            add(".")
    return View("".join(parts), tuple(origin))


def _joined(text: str, lines: list[tuple[int, int]]) -> View:
    """Lines of the chunk joined by newlines (each newline is the one that ended its line)."""
    origin: list[int] = []
    for a, b in lines:
        if origin:
            origin.append(a - 1)
        origin.extend(range(a, b))
    return View("".join(text[i] for i in origin), tuple(origin))
