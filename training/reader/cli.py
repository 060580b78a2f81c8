"""`ragdock train CONFIG.yaml` for a `kind: reader` config: what `training/cli.py` hands over to."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def run_reader(config: Path, overrides: list[str], *, progress: bool, finish: bool = False) -> None:
    """Train a reader as the config says and print the run's summary.

    Raises:
        typer.Exit: code 2 for an invalid config, bad data or a finished output_dir.
    """
    from training.config import ConfigError
    from training.reader.checkpoint import ResumeError
    from training.reader.config import load_reader_config
    from training.reader.recipe import run
    from training.reader.squad import SquadError

    try:
        cfg = load_reader_config(config, overrides)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[bold]ragdock train[/bold] {config} -> {cfg.output_dir} (reader, {cfg.method})")
    try:
        result = run(cfg, progress=progress, announce=console.print, finish=finish)
    except (SquadError, ResumeError, FileExistsError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    table = Table(title="reader training run")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.__dict__.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def check_reader(config: Path, overrides: list[str]) -> None:
    """Validate a reader config (nothing is loaded) and print it resolved.

    Raises:
        typer.Exit: code 2 for an invalid config.
    """
    from training.config import ConfigError
    from training.reader.config import load_reader_config

    try:
        cfg = load_reader_config(config, overrides)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
