"""`ragdock eval ...` commands for retrieval (more suites hook in here)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Evaluate retrieval (and, later, generation and grounding).")


@app.callback()
def _group() -> None:
    """Keeps `retrieval` a named sub-command even while it is the only one."""


@app.command("retrieval")
def retrieval_command(
    beir: Path = typer.Option(..., "--beir", help="BEIR folder, read in place."),
    split: str = typer.Option("test", help="qrels split."),
    sparse: str = typer.Option("edge", help="edge (qdrant-edge Bm25) | ours | ours-nostem."),
    avg_len: float = typer.Option(100.0, help="BM25 assumed average document length."),
    k1: float = typer.Option(1.2, help="BM25 term-frequency saturation."),
    b: float = typer.Option(0.75, help="BM25 length normalization."),
    max_tokens: int = typer.Option(200, help="chunk budget in embedder tokens."),
    overlap: int = typer.Option(32, help="chunk overlap in embedder tokens."),
    sweep: bool = typer.Option(False, help="score a grid of fusion settings for hybrid."),
    cache_dir: Path | None = typer.Option(None, help="embedding cache dir (outside the repo)."),
    max_queries: int | None = typer.Option(None, help="score only the first N queries."),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON."),
) -> None:
    """Recall@1/5/10/100, MRR@10 and nDCG@10 for dense, sparse and hybrid retrieval."""
    from rich.console import Console
    from rich.progress import Progress

    from eval.retrieval_beir import default_sweep, evaluate_beir, reference_fusions, render_table
    from retrieval.chunking import ChunkingConfig

    console = Console()
    fusions = default_sweep() if sweep else reference_fusions()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("ingesting", total=None)
        report = evaluate_beir(
            beir,
            split=split,
            sparse=sparse,
            avg_len=avg_len,
            chunking=ChunkingConfig(max_tokens, overlap),
            fusions=fusions,
            cache_dir=cache_dir,
            max_queries=max_queries,
            progress=lambda chunks, docs: bar.update(task, description=f"ingested {chunks} chunks"),
        )
    console.print(render_table(report))
    console.print(report.settings, report.timings)
    if json_out:
        json_out.write_text(json.dumps(report.as_json(), indent=2) + "\n", encoding="utf-8")
