"""`ragdock train ...`: run a training config, validate one, build RAFT data.

Typer app hooked into the root CLI as `train`:
    ragdock train run CONFIG.yaml [section.key=value ...]
    ragdock train check CONFIG.yaml [section.key=value ...]
    ragdock train build-raft SQUAD.json --out DIR [--distractors 3 ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Train LoRA / QLoRA adapters and build training data.", no_args_is_help=True)
console = Console(stderr=True)


def _load(config: Path, overrides: list[str]):  # type: ignore[no-untyped-def]
    from training.config import ConfigError, load_config

    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="Training config YAML (see training/configs/)."),
    overrides: list[str] | None = typer.Argument(
        None, help="Dotted overrides, e.g. optim.lr=1e-4 data.packing=true loop.resume_from=latest"
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    finish: bool = typer.Option(
        False,
        help="Reader configs: write the reader from the newest checkpoint's best weights "
        "now, without training further.",
    ),
) -> None:
    """Train an adapter as the config says; writes adapter, manifest, metrics and loss curve."""
    from training.data import DataError
    from training.reader.config import is_reader_config
    from training.recipe import run

    if is_reader_config(config):  # `kind: reader`: the span reader's recipe (training/reader)
        from training.reader.cli import run_reader

        run_reader(config, overrides or [], progress=progress, finish=finish)
        return
    cfg = _load(config, overrides or [])
    console.print(f"[bold]ragdock train[/bold] {config} -> {cfg.output_dir} ({cfg.method})")
    try:
        result = run(cfg, progress=progress, announce=console.print)
    except (DataError, FileExistsError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    table = Table(title="training run")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.__dict__.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    Console().print(table)


@app.command("check")
def check_command(
    config: Path = typer.Argument(..., help="Training config YAML."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides."),
) -> None:
    """Validate a config (no model is loaded) and print it resolved."""
    from training.reader.config import is_reader_config

    if is_reader_config(config):
        from training.reader.cli import check_reader

        check_reader(config, overrides or [])
        return
    cfg = _load(config, overrides or [])
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))


@app.command("build-raft")
def build_raft_command(
    squad: Path = typer.Argument(..., help="SQuAD-format JSON (read in place)."),
    out: Path = typer.Option(..., "--out", help="Directory for train/validation/holdout JSONL."),
    distractors: int = typer.Option(3, help="Distractor paragraphs beside the oracle."),
    p_remove_oracle: float = typer.Option(0.2, help="Probability of leaving the oracle out."),
    validation_articles: int = typer.Option(1, help="Whole articles for validation."),
    holdout_articles: int = typer.Option(2, help="Whole articles for the frozen holdout."),
    max_train: int | None = typer.Option(None, help="Cap on train examples (seeded subset)."),
    max_validation: int | None = typer.Option(None, help="Cap on validation examples."),
    max_holdout: int | None = typer.Option(None, help="Cap on holdout examples."),
    no_unanswerable: bool = typer.Option(False, help="Leave out SQuAD 2.0 impossible questions."),
    p_keep_unanswerable: float = typer.Option(
        1.0, help="Keep each impossible question with this probability (balances abstention)."
    ),
    model: str = typer.Option(
        "gemma-3-270m", help="Model whose tokenizer measures length ('' to skip the check)."
    ),
    max_tokens: int = typer.Option(1024, help="Drop distractors until an example fits."),
    train_turns: int = typer.Option(
        1, help="Question/answer turns per train example over one set of sources (1 = single)."
    ),
    replay_every: int = typer.Option(
        0, help="One plain-text replay record per this many train examples (0 = none)."
    ),
    train_p_keep_unanswerable: float | None = typer.Option(
        None, help="p-keep-unanswerable for the train split only (default: the same)."
    ),
    seed: int = typer.Option(0, help="Seeds the split, distractors, positions, subsets."),
) -> None:
    """Build RAFT grounded-answering chat data, split by article."""
    from grounding.prompt import DEFAULT_ABSTENTION_MESSAGE
    from training.raft import RaftOptions, build_raft

    caps = {"train": max_train, "validation": max_validation, "holdout": max_holdout}
    options = RaftOptions(
        distractors=distractors,
        p_remove_oracle=p_remove_oracle,
        validation_articles=validation_articles,
        holdout_articles=holdout_articles,
        max_per_split={k: v for k, v in caps.items() if v is not None},
        include_unanswerable=not no_unanswerable,
        p_keep_unanswerable=p_keep_unanswerable,
        max_tokens=max_tokens if model else None,
        abstention_message=DEFAULT_ABSTENTION_MESSAGE,
        seed=seed,
        train_turns=train_turns,
        replay_every=replay_every,
        train_p_keep_unanswerable=train_p_keep_unanswerable,
    )
    tokenizer = None
    if model:
        from engine.model_build import resolve_model_dir
        from training.model import load_tokenizer
        from training.recipe import default_home

        tokenizer = load_tokenizer(resolve_model_dir(model, default_home()))
    try:
        report = build_raft(squad, out, options, tokenizer)
    except (ValueError, KeyError, OSError) as exc:
        console.print(f"[red]cannot build RAFT data from {squad}: {exc}[/red]")
        raise typer.Exit(2) from None
    kinds = sorted({k for counts in report.counts.values() for k in counts})
    table = Table(title=f"RAFT data in {out}")
    table.add_column("split")
    table.add_column("articles", justify="right")
    for kind in kinds:
        table.add_column(kind, justify="right")
    table.add_column("total", justify="right")
    for split, counts in report.counts.items():
        table.add_row(
            split,
            str(len(report.articles[split])),
            *(str(counts.get(k, 0)) for k in kinds),
            str(sum(counts.values())),
        )
    Console().print(table)
    print(
        f"examples with fewer distractors (to fit or for lack of paragraphs): "
        f"{report.fewer_distractors}; skipped as too long: {report.skipped_too_long}",
        file=sys.stderr,
    )


def main() -> None:  # pragma: no cover - for `python -m training.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
