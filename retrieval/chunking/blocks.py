"""Split markdown or plain text into structural blocks, each under its heading path.

A block is the unit the packer keeps whole when it can: a paragraph, a list item, a table or a
fenced code block. Tables and code blocks are marked atomic: the packer may split them only
between rows (lines), never inside one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^\s{0,3}([-*+]|\d{1,9}[.)])\s+")
_TABLE_ROW = re.compile(r"^\s*\|")


class BlockKind(StrEnum):
    PARAGRAPH = "paragraph"
    LIST_ITEM = "list_item"
    TABLE = "table"
    CODE = "code"


@dataclass(frozen=True)
class Block:
    """A structural unit of text and the headings it sits under."""

    kind: BlockKind
    text: str
    heading_path: tuple[str, ...]

    @property
    def atomic(self) -> bool:
        """Tables and code split only between lines, never inside one."""
        return self.kind in (BlockKind.TABLE, BlockKind.CODE)


def parse_blocks(text: str, *, markdown: bool = True) -> list[Block]:
    """Parse text into blocks.

    Args:
        text: the document body.
        markdown: when False, `#` lines, fences, tables and list markers are plain prose.

    Returns:
        Blocks in document order; empty blocks are dropped.
    """
    blocks: list[Block] = []
    path: list[str] = []
    current: list[str] = []
    kind = BlockKind.PARAGRAPH
    fence: str | None = None

    def flush() -> None:
        nonlocal current, kind
        body = "\n".join(current).strip("\n")
        if body.strip():
            blocks.append(Block(kind, body, tuple(path)))
        current, kind = [], BlockKind.PARAGRAPH

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if fence is not None:
            current.append(line)
            if line.strip().startswith(fence):
                fence = None
                flush()
            continue
        if not markdown:
            if line.strip():
                current.append(line)
            else:
                flush()
            continue
        heading = parse_heading(line)
        fence_match = _FENCE.match(line)
        if heading:
            flush()
            level, title = heading
            del path[level - 1 :]
            # A skipped level (## under nothing) still nests under what is there.
            path.append(title)
        elif fence_match:
            flush()
            fence, kind = fence_match.group(1), BlockKind.CODE
            current.append(line)
        elif _TABLE_ROW.match(line):
            if kind is not BlockKind.TABLE:
                flush()
                kind = BlockKind.TABLE
            current.append(line)
        elif _LIST_ITEM.match(line):
            flush()
            kind = BlockKind.LIST_ITEM
            current.append(line)
        elif not line.strip():
            flush()
        else:
            if kind is BlockKind.TABLE:
                flush()
            current.append(line)
    flush()  # an unclosed fence still becomes a code block
    return blocks


def parse_heading(line: str) -> tuple[int, str] | None:
    """(level, title) of an ATX heading line (`## Title ##`), else None.

    Plain string scanning, linear in the line: the regular expression this replaces
    (`^(#{1,6})\\s+(.*?)\\s*#*\\s*$`) backtracked cubically on a heading padded with spaces
    (`"# a" + " " * 1000 + "z"` took 5 s), holding the GIL and stalling the whole process.
    """
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or len(line) == level or not line[level].isspace():
        return None
    # Closing hashes go, with the spaces around them (as the expression did).
    return level, line[level:].strip().rstrip("#").strip()
