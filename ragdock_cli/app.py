"""The `ragdock` command: one entry point that dispatches to each package's commands.

It sits above every package (it imports them all, and none imports it), so `ragdock` below stays
the ground floor that they all share.
"""

from __future__ import annotations

import sys

import typer

from adapters.cli import app as adapters_app
from engine.cli import engine_app, model_app
from eval.cli import app as eval_app
from retrieval.cli import app as retrieval_app
from retrieval.ingest_cli import ingest
from retrieval.sources_cli import app as sources_app
from server.cli import serve, up
from server.readers_cli import app as readers_app
from server.worker_cli import worker
from training.cli import app as train_app

app = typer.Typer(
    help="ragdock: RAG + LoRA adapters on vLLM behind an OpenAI-compatible gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command(help="Build the model if needed, start vLLM and the gateway (Ctrl-C stops both).")(up)
app.command(help="Run the gateway only, against a running engine (--engine-url).")(serve)
app.command(help="Run sync jobs of sources, without serving HTTP.")(worker)
app.add_typer(model_app, name="model")
app.add_typer(engine_app, name="engine")
app.add_typer(adapters_app, name="adapters")
app.add_typer(readers_app, name="readers")
app.command(help="Ingest files into a collection of a running gateway, with progress.")(ingest)
app.add_typer(sources_app, name="sources", help="Folder and SQL sources, synced by jobs.")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(retrieval_app, name="retrieval", help="Offline store commands (gateway stopped).")


# `ragdock eval SUITE.yaml` and `ragdock train CONFIG.yaml` are the documented short forms of
# `... run FILE`; click cannot mix a positional file with sub-commands, so the alias is spelt here.
_RUN_ALIASES = {"eval", "train"}


def expand_short_forms(argv: list[str]) -> list[str]:
    """`[eval|train] FILE.yaml ...` -> `[eval|train] run FILE.yaml ...`; anything else unchanged."""
    if len(argv) >= 2 and argv[0] in _RUN_ALIASES and argv[1].endswith((".yaml", ".yml")):
        return [argv[0], "run", *argv[1:]]
    return argv


def main() -> None:
    """Run the command line `sys.argv` holds."""
    app(args=expand_short_forms(sys.argv[1:]), prog_name="ragdock")
