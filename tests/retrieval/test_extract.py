"""Extraction keeps the structure the chunker relies on."""

from __future__ import annotations

import pytest

from retrieval.chunking import BlockKind, parse_blocks
from retrieval.extract import extract_text, html_to_markdown

HTML = """<html><head><title>t</title><style>p {color: red}</style></head><body>
<h1>Manual</h1><p>Hello <b>bold</b>
world.</p><script>alert(1)</script>
<h2>Steps</h2><ul><li>one</li><li>two</li></ul>
<table><tr><th>k</th><th>v</th></tr><tr><td>a|b</td><td>1</td></tr></table>
<pre>def f():
    return 1</pre></body></html>"""


def test_html_to_markdown_structure() -> None:
    text = html_to_markdown(HTML)
    assert "alert" not in text and "color" not in text
    blocks = parse_blocks(text)
    assert [(b.kind, b.heading_path) for b in blocks] == [
        (BlockKind.PARAGRAPH, ("Manual",)),
        (BlockKind.LIST_ITEM, ("Manual", "Steps")),
        (BlockKind.LIST_ITEM, ("Manual", "Steps")),
        (BlockKind.TABLE, ("Manual", "Steps")),
        (BlockKind.CODE, ("Manual", "Steps")),
    ]
    assert blocks[0].text == "Hello bold world."
    assert blocks[3].text == "| k | v |\n|---|---|\n| a\\|b | 1 |"
    assert blocks[4].text == "```\ndef f():\n    return 1\n```"


def test_extract_text_by_content_type() -> None:
    assert extract_text("# x", "text/markdown") == ("# x", True)
    assert extract_text("# x", "text/plain; charset=utf-8") == ("# x", False)
    assert extract_text("<h1>x</h1>", "text/html") == ("# x", True)
    with pytest.raises(ValueError, match="application/pdf"):
        extract_text("%PDF", "application/pdf")
