"""The reader's views of a chunk: a markdown table read row by row with its column names, spans
mapped back to the chunk's own characters; and, on the shipped reader, the right row's cell."""

from __future__ import annotations

import pytest

from grounding.reader.predict import SpanReading
from grounding.reader.reader import chunk_reading
from grounding.reader.views import View, reading_views, whole

PUMPS = (
    "| Pump | Service interval | Owner |\n"
    "| --- | :---: | --- |\n"
    "| P-101 | every 90 days | facilities |\n"
    "| P-205 | every 30 days | operations |"
)


def test_a_chunk_without_a_table_is_read_whole() -> None:
    for text in ["Plain prose | with a pipe.", "| a | b |\n| c | d |", ""]:
        assert reading_views(text) == [whole(text)]


def test_each_table_row_is_read_with_its_column_names() -> None:
    views = reading_views(PUMPS)
    assert [v.text for v in views] == [
        "Pump: P-101. Service interval: every 90 days. Owner: facilities.",
        "Pump: P-205. Service interval: every 30 days. Owner: operations.",
    ]


def test_prose_around_a_table_is_one_view_and_comes_first() -> None:
    chunk = f"Pumps are listed below.\n\n{PUMPS}\nAsk facilities for the keys."
    views = reading_views(chunk)
    assert views[0].text == "Pumps are listed below.\n\nAsk facilities for the keys."
    assert len(views) == 3
    for view in views:  # every character the view did not add is the chunk's own
        assert all(o < 0 or chunk[o] == c for c, o in zip(view.text, view.origin, strict=True))


def test_a_span_maps_back_to_the_chunk_and_stays_in_one_cell() -> None:
    view = reading_views(PUMPS)[0]
    start = view.text.index("every 90 days")
    assert view.chunk_span(start, start + len("every 90 days")) == (
        PUMPS.index("every 90 days"),
        PUMPS.index("every 90 days") + len("every 90 days"),
    )
    across = view.chunk_span(start, len(view.text))  # "every 90 days. Owner: facilities."
    assert across is not None and PUMPS[across[0] : across[1]] == "every 90 days"
    on_a_name = view.text.index("Owner: ")
    only_name = view.chunk_span(on_a_name, on_a_name + len("Owner: "))
    assert only_name is None  # a column name the view added is not the chunk's text


def test_outer_pipes_escaped_pipes_and_empty_cells() -> None:
    chunk = "Name | Note\n--- | ---\nA \\| B | \nC |  keep this "
    views = reading_views(chunk)
    assert [v.text for v in views] == ["Name: A \\| B.", "Name: C. Note: keep this."]


def test_a_table_with_too_many_rows_is_read_whole() -> None:
    rows = "\n".join(f"| r{i} | {i} |" for i in range(5))
    chunk = f"| k | v |\n|---|---|\n{rows}"
    assert reading_views(chunk, max_rows=4) == [whole(chunk)]
    assert len(reading_views(chunk, max_rows=5)) == 5


def reading(view: View, span: str, margin: float) -> tuple[View, SpanReading]:
    start = view.text.index(span)
    return view, SpanReading(span, start, start + len(span), 5.0 + margin, 5.0, margin)


def test_the_view_with_the_largest_margin_speaks_for_the_chunk() -> None:
    first, second = reading_views(PUMPS)
    read = [reading(first, "every 90 days", 0.5), reading(second, "30", 2.0)]
    chosen = chunk_reading(PUMPS, read)
    assert (chosen.text, chosen.margin) == ("30", 2.0)
    assert chosen.start is not None and PUMPS[chosen.start : chosen.end] == "30"


def test_a_view_whose_span_is_only_added_text_does_not_speak() -> None:
    first, second = reading_views(PUMPS)
    read = [reading(first, "Owner: ", 3.0), reading(second, "operations", -1.0)]
    assert chunk_reading(PUMPS, read).text == "operations"
    nothing = chunk_reading(PUMPS, [reading(first, "Owner: ", 3.0)])
    assert (nothing.text, nothing.start, nothing.margin) == ("", None, 3.0)


@pytest.mark.embedder
def test_the_shipped_reader_reads_the_asked_row_of_a_table() -> None:
    from grounding.reader.reader import Reader
    from server.rag.reading import SHIPPED_READER

    reader = Reader.load(SHIPPED_READER, threads=1)
    for pump, interval in [("P-101", "every 90 days"), ("P-205", "30 days")]:
        (read,) = reader.read(f"How often is pump {pump} serviced?", [PUMPS])
        assert interval in read.text and read.margin > 0, read
        assert read.start is not None and PUMPS[read.start : read.end] == read.text
