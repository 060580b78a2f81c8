"""What reading tables row by row costs the reader, side by side with reading them whole.

Five sources per read, as the gateway asks: prose chunks (read whole either way), and chunks
holding one markdown table of ROWS rows (the table's rows read as one view each, or the chunk
read whole as before `grounding/reader/views.py`). Reads alternate between the two ways, so
machine noise hits both alike; medians over `--reps`.

A second table shows what the reader picks in a two-row pump table, read whole and row by row,
for each row's question and for a pump the table does not list (span and margin).

Run: python -m eval.perf.reader_tables [--rows 4,16] [--reps 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from functools import partial

from rich.console import Console

from eval.perf.bench import print_results, results_table, timed
from grounding.reader import views
from grounding.reader.reader import Reader
from server.rag.reading import SHIPPED_READER

QUESTION = "How often is pump P-101 serviced?"
PROSE = (
    "The emergency generator is tested on the first Monday of each month by the facilities "
    "team, who log the run time and the fuel level and report any fault to the duty manager "
    "before noon. Visitor badges expire after twelve hours and are returned at reception."
)


PUMPS = (
    "| Pump | Service interval | Owner |\n| --- | --- | --- |\n"
    "| P-101 | every 90 days | facilities |\n| P-205 | every 30 days | operations |"
)
PUMP_QUESTIONS = [f"How often is pump {p} serviced?" for p in ("P-101", "P-205", "P-300")]


def table(rows: int) -> str:
    """A markdown table chunk of `rows` pumps."""
    lines = ["| Pump | Service interval | Owner | Location |", "| --- | --- | --- | --- |"]
    lines += [
        f"| P-{100 + i} | every {30 + 5 * i} days | team {i % 4} | hall {i}" for i in range(rows)
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table of read times."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="4,16", help="rows per table chunk")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    console = Console(width=120)
    reader = Reader.load(SHIPPED_READER, threads=args.threads)
    reader.read(QUESTION, [PROSE])  # warm up
    result = results_table(
        "reader, 5 sources per read", ["sources", "views", "whole p50 s", "by row p50 s", "ratio"]
    )
    summary = []
    cases = [("5 prose", [PROSE] * 5)]
    cases += [(f"5 tables of {n} rows", [table(n)] * 5) for n in map(int, args.rows.split(","))]
    for label, chunks in cases:
        times: dict[str, list[float]] = {"whole": [], "rows": []}
        for _ in range(args.reps):
            for way, limit in (("whole", 0), ("rows", views.MAX_ROWS)):
                reader.max_table_rows = limit  # 0: every table chunk is read whole
                times[way].append(timed(partial(reader.read, QUESTION, chunks)))
        count = sum(len(views.reading_views(c)) for c in chunks)
        whole, rows = statistics.median(times["whole"]), statistics.median(times["rows"])
        result.add_row(label, str(count), f"{whole:.3f}", f"{rows:.3f}", f"{rows / whole:.2f}")
        summary.append(f"{label}: by row / whole p50 {rows / whole:.2f}")
    columns = ["question", "whole", "by row"]
    picks = results_table("what the reader picks (two-row pump table)", columns)
    for question in PUMP_QUESTIONS:
        cells = []
        for limit in (0, views.MAX_ROWS):
            reader.max_table_rows = limit
            (read,) = reader.read(question, [PUMPS])
            cells.append(f"{read.text!r} ({read.margin:+.2f})")
        picks.add_row(question, *cells)
    print_results(console, result, "float32", summary=summary)
    console.print(picks)


if __name__ == "__main__":
    main()
