"""Text extraction: HTML to markdown-like text (so the chunker sees its structure), and a
passthrough for plain text and markdown. PDF needs `pypdf`, which is not a dependency yet.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP = {"script", "style", "noscript", "template", "head", "svg"}
_BLOCK = {"p", "div", "section", "article", "blockquote", "header", "footer", "main", "br", "hr"}
_SPACE = re.compile(r"[ \t\r\f\v]+")


class _MarkdownWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.rows_in_table = 0

    def _emit(self, text: str) -> None:
        target = self.cell if self.cell is not None else self.out
        target.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "pre":
            self.pre += 1
            self.out.append("\n\n```\n")
        elif tag == "table":
            self.out.append("\n\n")
            self.rows_in_table = 0
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag in _BLOCK:
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in _BLOCK or tag in ("ul", "ol"):
            self.out.append("\n\n")
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.out.append("\n```\n\n")
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()).replace("|", "\\|"))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.out.append("| " + " | ".join(self.row) + " |\n")
            if self.rows_in_table == 0:  # markdown needs a separator under the first row
                self.out.append("|" + "---|" * len(self.row) + "\n")
            self.rows_in_table += 1
            self.row = None
        elif tag == "table":
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self._emit(data if self.pre else _SPACE.sub(" ", data.replace("\n", " ")))


def html_to_markdown(html: str) -> str:
    """Convert HTML to markdown-like text: headings, lists, tables, code blocks, paragraphs.

    Args:
        html: an HTML document or fragment.

    Returns:
        Text whose structure `retrieval.chunking.parse_blocks` understands; scripts and
        styles are dropped.
    """
    writer = _MarkdownWriter()
    writer.feed(html)
    writer.close()
    lines: list[str] = []
    in_code = False
    for line in "".join(writer.out).split("\n"):
        if line.strip().startswith("```"):
            in_code = not in_code
            lines.append(line.strip())
        else:  # code keeps its indentation; prose loses the spaces left around tags
            lines.append(line.rstrip() if in_code else line.strip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def extract_text(body: str, content_type: str) -> tuple[str, bool]:
    """The indexable text of a document and whether it is markdown.

    Args:
        body: the raw content.
        content_type: `text/html`, `text/markdown` or `text/plain` (parameters ignored).

    Returns:
        (text, is_markdown).

    Raises:
        ValueError: for a content type that has no extractor.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return html_to_markdown(body), True
    if kind in ("text/markdown", "text/x-markdown"):
        return body, True
    if kind == "text/plain":
        return body, False
    raise ValueError(f"no text extractor for content type {content_type!r}")
