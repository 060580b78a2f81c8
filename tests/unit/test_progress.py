"""The one progress-bar layout (ragdock/progress.py): a task's note shows when it has one, and a
task of unknown size counts without a total."""

from __future__ import annotations

import io

from rich.console import Console

from ragdock.progress import progress_bar


def test_a_bar_shows_its_count_and_note_and_an_open_ended_one_counts_alone() -> None:
    out = io.StringIO()
    with progress_bar(Console(file=out, width=120)) as bar:
        train = bar.add_task("train", total=10, info="")
        bar.update(train, completed=5, info="loss 1.234")
        ingest = bar.add_task("ingesting", total=None)  # no `info`: its column stays blank
        bar.update(ingest, completed=7)
    lines = out.getvalue().splitlines()
    assert any("train" in line and "5/10" in line and "loss 1.234" in line for line in lines)
    assert any("ingesting" in line and "7/?" in line for line in lines)
