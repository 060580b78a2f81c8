"""The `ragdock` command: one entry point that dispatches to each package's commands."""

from __future__ import annotations

import typer

from adapters.cli import app as adapters_app
from engine.cli import engine_app, model_app
from eval.cli import app as eval_app
from retrieval.cli import app as retrieval_app
from retrieval.ingest_cli import ingest
from server.cli import serve, up
from training.cli import app as train_app

app = typer.Typer(
    help="ragdock: RAG + LoRA adapters on vLLM behind an OpenAI-compatible gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command(help="Build the model if needed, start vLLM and the gateway (Ctrl-C stops both).")(up)
app.command(help="Run the gateway only, against a running engine (--engine-url).")(serve)
app.add_typer(model_app, name="model")
app.add_typer(engine_app, name="engine")
app.add_typer(adapters_app, name="adapters")
app.command(help="Ingest files into a collection of a running gateway, with progress.")(ingest)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(retrieval_app, name="retrieval", help="Offline store commands (gateway stopped).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
