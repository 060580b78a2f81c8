"""The progress bar of every long command (ingest, eval, calibration, training): one layout, so
they all read alike: what it is doing, the bar, done/total, the last step's note, time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _InfoColumn(ProgressColumn):
    """A task's `info` field (what its last step reported, e.g. a loss); blank when it has none."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("info", "")))


def progress_bar(
    console: Console | None = None, *, transient: bool = False, disable: bool = False
) -> Progress:
    """A rich `Progress` in the one layout; use it as a context manager.

    A task of unknown size (`total=None`) pulses and counts `n/?`; the time column shows the time
    left while it runs and the time it took once done.

    Args:
        console: where to draw (default: rich's own console on stdout).
        transient: clear the bars when the block ends.
        disable: draw nothing (a run asked not to show progress).
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _InfoColumn(),
        TimeRemainingColumn(elapsed_when_finished=True),
        console=console,
        transient=transient,
        disable=disable,
    )
